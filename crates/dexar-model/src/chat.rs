//! Chat templates: how a conversation (earlier turns and a new question)
//! becomes the text a model reads, before `<image>` expansion and
//! tokenisation. One place for each format, so the REPL's multi-turn
//! conversations, `dexar explain`'s single turn and the demo model's training
//! text agree.

use crate::error::{ModelError, Result};
use crate::prompt::IMAGE_MARKER;

/// One finished exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// The conversation formats dexar knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatTemplate {
    /// LLaVA-1.5 (and BakLLaVA): `USER: <image>\n{q} ASSISTANT: {a}</s>USER: {q} ASSISTANT:`;
    /// the image once, in the first user turn; each earlier answer closed by `</s>`.
    #[default]
    Llava15,
}

impl ChatTemplate {
    /// The text of a conversation of `turns` followed by the question `prompt`,
    /// ending where the model's answer starts.
    pub fn render(&self, turns: &[Turn], prompt: &str) -> String {
        match self {
            Self::Llava15 => {
                let mut text = String::new();
                let user = |text: &mut String, first: bool, question: &str| {
                    text.push_str("USER: ");
                    if first {
                        text.push_str(IMAGE_MARKER);
                        text.push('\n');
                    }
                    text.push_str(question);
                    text.push_str(" ASSISTANT:");
                };
                for (i, t) in turns.iter().enumerate() {
                    user(&mut text, i == 0, &t.user);
                    text.push(' ');
                    text.push_str(t.assistant.trim());
                    text.push_str("</s>");
                }
                user(&mut text, turns.is_empty(), prompt);
                text
            }
        }
    }
}

/// A single-turn template given by the user: `{prompt}` is replaced by the
/// question.
pub fn apply_template(template: &str, prompt: &str) -> Result<String> {
    if !template.contains("{prompt}") {
        return Err(ModelError::Input(
            "the chat template must contain {prompt}".into(),
        ));
    }
    Ok(template.replace("{prompt}", prompt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_conversations() {
        let t = ChatTemplate::Llava15;
        assert_eq!(
            t.render(&[], "What is it?"),
            "USER: <image>\nWhat is it? ASSISTANT:"
        );
        let turns = vec![
            Turn {
                user: "p1".into(),
                assistant: " a1 ".into(),
            },
            Turn {
                user: "p2".into(),
                assistant: "a2".into(),
            },
        ];
        let text = t.render(&turns, "p3");
        assert_eq!(
            text,
            "USER: <image>\np1 ASSISTANT: a1</s>USER: p2 ASSISTANT: a2</s>USER: p3 ASSISTANT:"
        );
        assert_eq!(text.matches(IMAGE_MARKER).count(), 1);
    }

    #[test]
    fn custom_templates_need_the_prompt() {
        assert_eq!(apply_template("Q: {prompt} A:", "x").unwrap(), "Q: x A:");
        let e = apply_template("no slot", "x").unwrap_err().to_string();
        assert!(e.contains("{prompt}"), "{e}");
    }
}
