//! Which tokens of the answer a map is about.

use std::ops::Range;

use dexar_core::StepTrace;

use crate::error::StateError;

/// A selection of answer tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Token(usize),
    /// Inclusive range, first <= last.
    Range(usize, usize),
    /// A word or phrase of the answer (case ignored).
    Word(String),
    /// The whole answer (the sentence map).
    All,
}

impl Selection {
    /// The token indices this selection covers in `steps`.
    pub fn resolve(&self, steps: &[StepTrace]) -> Result<Range<usize>, StateError> {
        let n = steps.len();
        let Some(last) = n.checked_sub(1) else {
            return Err(StateError::EmptyAnswer);
        };
        let out_of_range = |index: usize| StateError::NoToken { index, last };
        match self {
            Selection::Token(i) if *i < n => Ok(*i..*i + 1),
            Selection::Token(i) => Err(out_of_range(*i)),
            Selection::Range(a, b) if *b < n => Ok(*a..*b + 1),
            Selection::Range(_, b) => Err(out_of_range(*b)),
            Selection::All => Ok(0..n),
            Selection::Word(w) => {
                let texts: Vec<&str> = steps.iter().map(|s| s.token_text.as_str()).collect();
                dexar_core::words::find_word(&texts, w).ok_or_else(|| StateError::NoWord(w.clone()))
            }
        }
    }
}
