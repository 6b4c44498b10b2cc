//! Chat templates: how a conversation (earlier turns and a new question)
//! becomes the text a model reads, before image expansion and tokenisation.
//! LLaVA-1.5 has a fixed format; the Qwen-VL checkpoints ship their own Jinja
//! template, rendered here with minijinja the way transformers'
//! `apply_chat_template` renders it. One place for each format, so the REPL's
//! multi-turn conversations, `dexar explain`'s single turn and the demo
//! model's training text agree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{Environment, ErrorKind};
use serde_json::{json, Value};

use crate::error::{ModelError, Result};
use crate::prompt::IMAGE_MARKER;

/// One finished exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// The conversation formats dexar knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ChatTemplate {
    /// LLaVA-1.5 (and BakLLaVA): `USER: <image>\n{q} ASSISTANT: {a}</s>USER: {q} ASSISTANT:`;
    /// the image once, in the first user turn; each earlier answer closed by `</s>`.
    #[default]
    Llava15,
    /// The checkpoint's own Jinja template.
    Jinja(Arc<JinjaTemplate>),
    /// PaliGemma: no conversation, a task prefix (`caption en`,
    /// `answer en ...`) after the image, `<image>{prompt}`; the processor's
    /// BOS and `\n` are added when the prompt is prepared. Earlier turns are
    /// not part of the input: each prompt is answered about the image alone.
    PaliGemma,
    /// The checkpoint (this directory) ships no template: raw prompts only.
    Missing(PathBuf),
}

impl ChatTemplate {
    /// The text of a conversation of `turns` followed by the question `prompt`,
    /// ending where the model's answer starts. The image goes in the first
    /// user turn.
    pub fn render(&self, turns: &[Turn], prompt: &str) -> Result<String> {
        match self {
            Self::Llava15 => Ok(llava15(turns, prompt)),
            Self::Jinja(t) => t.render(turns, prompt),
            Self::PaliGemma => {
                crate::models::paligemma::check_task_prefix(prompt).map_err(ModelError::Prompt)?;
                Ok(format!("{IMAGE_MARKER}{prompt}"))
            }
            Self::Missing(dir) => Err(ModelError::Prompt(format!(
                "{} has no chat template (chat_template.jinja, chat_template.json or a chat_template in tokenizer_config.json); give a raw prompt with the image marker instead",
                dir.display()
            ))),
        }
    }
}

/// The LLaVA-1.5 conversation format (see [`ChatTemplate::Llava15`]).
pub fn llava15(turns: &[Turn], prompt: &str) -> String {
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

/// A checkpoint's Jinja chat template, compiled.
#[derive(Debug)]
pub struct JinjaTemplate {
    /// The file it came from.
    pub origin: PathBuf,
    pub source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    env: Environment<'static>,
}

impl PartialEq for JinjaTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const TEMPLATE_NAME: &str = "chat";

impl JinjaTemplate {
    /// Compiles `source` with the environment transformers renders templates
    /// in: blocks trimmed, loop controls, Python string methods,
    /// `raise_exception` and a `tojson` that does not escape HTML.
    pub fn new(
        source: &str,
        origin: &Path,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ModelError::Setting(e.to_string()))?;
        env.set_syntax(syntax);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_filter(
            "tojson",
            |v: minijinja::Value| -> std::result::Result<String, minijinja::Error> {
                serde_json::to_string(&v)
                    .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| {
                ModelError::bad_file(
                    origin,
                    format!("the chat template does not parse ({})", one_line_jinja(&e)),
                )
            })?;
        Ok(Self {
            origin: origin.into(),
            source: source.into(),
            bos_token,
            eos_token,
            env,
        })
    }

    /// Renders `turns` and the question `prompt` as transformers'
    /// `apply_chat_template(messages, add_generation_prompt=True)` does, with
    /// the image as the first item of the first user message.
    pub fn render(&self, turns: &[Turn], prompt: &str) -> Result<String> {
        let user = |first: bool, text: &str| {
            let mut content = Vec::new();
            if first {
                content.push(json!({"type": "image"}));
            }
            content.push(json!({"type": "text", "text": text}));
            json!({"role": "user", "content": content})
        };
        let mut messages: Vec<Value> = Vec::new();
        for (i, t) in turns.iter().enumerate() {
            messages.push(user(i == 0, &t.user));
            messages.push(
                json!({"role": "assistant", "content": [{"type": "text", "text": t.assistant}]}),
            );
        }
        messages.push(user(turns.is_empty(), prompt));
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::Prompt(format!("chat template: {}", one_line_jinja(&e))))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
            add_generation_prompt => true,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })
        .map_err(|e| {
            ModelError::Prompt(format!(
                "the chat template of {} fails: {}",
                self.origin.display(),
                one_line_jinja(&e)
            ))
        })
    }
}

fn one_line_jinja(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    if let Some(line) = e.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" at line {line}"));
        }
    }
    dexar_core::one_line(&msg)
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

/// Finds a checkpoint's chat template where transformers looks for one:
/// `chat_template.jinja`, `chat_template.json`, then `tokenizer_config.json`
/// (a string, or a list of named templates of which `default` is used).
pub fn load_chat_template(dir: &Path) -> Result<ChatTemplate> {
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?;
    let special = |key: &str| -> Option<String> {
        let v = tokenizer_config.as_ref()?.get(key)?;
        v.as_str()
            .or_else(|| v.get("content")?.as_str())
            .map(str::to_string)
    };
    let make = |source: &str, origin: &Path| -> Result<ChatTemplate> {
        let t = JinjaTemplate::new(source, origin, special("bos_token"), special("eos_token"))?;
        Ok(ChatTemplate::Jinja(Arc::new(t)))
    };
    let jinja = dir.join("chat_template.jinja");
    if let Some(source) = crate::error::read_optional_text(&jinja)? {
        return make(&source, &jinja);
    }
    let json_path = dir.join("chat_template.json");
    if let Some(v) = read_json(&json_path)? {
        let source = v
            .get("chat_template")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::bad_file(&json_path, "no `chat_template` string in it"))?;
        return make(source, &json_path);
    }
    let tc_path = dir.join("tokenizer_config.json");
    match tokenizer_config
        .as_ref()
        .and_then(|v| v.get("chat_template"))
    {
        None | Some(Value::Null) => Ok(ChatTemplate::Missing(dir.into())),
        Some(Value::String(source)) => make(source, &tc_path),
        Some(Value::Array(named)) => {
            let default = named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
            {
                Some(source) => make(source, &tc_path),
                None => Err(ModelError::bad_file(
                    &tc_path,
                    "`chat_template` is a list without a template named `default`",
                )),
            }
        }
        Some(_) => Err(ModelError::bad_file(
            &tc_path,
            "`chat_template` must be a string or a list of {name, template}",
        )),
    }
}

/// A JSON file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    crate::error::read_optional_text(path)?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| ModelError::bad_file(path, format!("not valid JSON ({e})")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_conversations() {
        let t = ChatTemplate::Llava15;
        assert_eq!(
            t.render(&[], "What is it?").unwrap(),
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
        let text = t.render(&turns, "p3").unwrap();
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

    fn jinja(source: &str) -> Result<JinjaTemplate> {
        JinjaTemplate::new(source, Path::new("t/chat_template.jinja"), None, None)
    }

    #[test]
    fn jinja_templates_render_messages_like_transformers() {
        // Python string methods, namespaces, `in` on mappings, trimmed blocks.
        let t = jinja(
            "{%- set ns = namespace(n=0) %}\n{%- for m in messages %}\n{%- if 'image' == m.content[0].type %}{% set ns.n = ns.n + 1 %}{% endif %}\n<{{ m.role }}>{{ m.content[-1].text.strip() }}|{{ m.content[-1].text.startswith('Q') }}\n{%- endfor %}\n{{ ns.n }}{% if add_generation_prompt %}>{% endif %}",
        )
        .unwrap();
        let turns = [Turn {
            user: " Q1 ".into(),
            assistant: "A1".into(),
        }];
        assert_eq!(
            t.render(&turns, "Q2").unwrap(),
            "<user>Q1|False<assistant>A1|False<user>Q2|True1>"
        );
    }

    #[test]
    fn broken_templates_are_one_line_errors() {
        let e = jinja("{% for m in messages %}").unwrap_err().to_string();
        assert!(
            e.contains("chat template does not parse") && !e.contains('\n'),
            "{e}"
        );
        let t = jinja("{{ raise_exception('no system role here') }}").unwrap();
        let e = t.render(&[], "q").unwrap_err().to_string();
        assert!(
            e.contains("no system role here") && !e.contains('\n'),
            "{e}"
        );
        let missing = ChatTemplate::Missing(PathBuf::from("ckpt"));
        let e = missing.render(&[], "q").unwrap_err().to_string();
        assert!(
            e.contains("ckpt has no chat template") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn templates_are_found_where_transformers_looks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(
            load_chat_template(d).unwrap(),
            ChatTemplate::Missing(_)
        ));
        std::fs::write(d.join("tokenizer_config.json"), r#"{"chat_template": [{"name": "default", "template": "A{{ messages|length }}"}], "eos_token": "<e>"}"#).unwrap();
        assert_eq!(
            load_chat_template(d).unwrap().render(&[], "q").unwrap(),
            "A1"
        );
        std::fs::write(
            d.join("chat_template.json"),
            r#"{"chat_template": "B{{ eos_token }}"}"#,
        )
        .unwrap();
        assert_eq!(
            load_chat_template(d).unwrap().render(&[], "q").unwrap(),
            "B<e>"
        );
        std::fs::write(d.join("chat_template.jinja"), "C").unwrap();
        assert_eq!(
            load_chat_template(d).unwrap().render(&[], "q").unwrap(),
            "C"
        );
        std::fs::write(d.join("chat_template.jinja"), "{% if %}").unwrap();
        let e = load_chat_template(d).unwrap_err().to_string();
        assert!(
            e.contains("chat_template.jinja") && e.contains("does not parse"),
            "{e}"
        );
        std::fs::remove_file(d.join("chat_template.jinja")).unwrap();
        std::fs::write(d.join("chat_template.json"), "{not json").unwrap();
        let e = load_chat_template(d).unwrap_err().to_string();
        assert!(
            e.contains("chat_template.json") && e.contains("not valid JSON"),
            "{e}"
        );
        std::fs::write(d.join("chat_template.json"), r#"{"template": 3}"#).unwrap();
        let e = load_chat_template(d).unwrap_err().to_string();
        assert!(e.contains("no `chat_template` string"), "{e}");
    }
}
