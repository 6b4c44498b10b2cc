//! From words of an answer to the tokens that spell them. An answer is a
//! list of token texts; a word or phrase is a byte range of their
//! concatenation, and its tokens are those carrying any of its characters.

use std::ops::Range;

/// The tokens (indices, ascending) whose text shares at least one byte with
/// `bytes`, a byte range of the concatenated `texts`. Empty tokens carry no
/// characters and are never included.
pub fn tokens_in(texts: &[&str], bytes: Range<usize>) -> Vec<usize> {
    let mut offset = 0;
    let mut out = Vec::new();
    for (t, text) in texts.iter().enumerate() {
        let (a, b) = (offset, offset + text.len());
        if a < b && a < bytes.end && b > bytes.start {
            out.push(t);
        }
        offset = b;
    }
    out
}

/// For each whitespace-separated word of the concatenated texts, the tokens
/// that carry any of its characters.
pub fn word_tokens(texts: &[&str]) -> Vec<Vec<usize>> {
    let answer = texts.concat();
    let mut words = Vec::new();
    let mut start = None;
    for (i, ch) in answer.char_indices().chain([(answer.len(), ' ')]) {
        match (ch.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push(tokens_in(texts, s..i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    words
}

/// The tokens covering the first occurrence of `word` (a word or a phrase) in
/// the concatenated texts, ASCII case ignored, whole-word matches preferred.
pub fn find_word(texts: &[&str], word: &str) -> Option<Range<usize>> {
    let answer: String = texts.concat().to_ascii_lowercase();
    let needle = word.trim().to_ascii_lowercase();
    if needle.is_empty() {
        return None;
    }
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let occurrences: Vec<usize> = answer.match_indices(&needle).map(|(i, _)| i).collect();
    let whole = occurrences.iter().copied().find(|&i| {
        !is_word_char(answer[..i].chars().next_back())
            && !is_word_char(answer[i + needle.len()..].chars().next())
    });
    let start = whole.or_else(|| occurrences.first().copied())?;
    let tokens = tokens_in(texts, start..start + needle.len());
    Some(*tokens.first()?..*tokens.last()? + 1)
}

/// `text` on one line: line breaks and runs of whitespace collapsed into
/// single spaces (for messages built from nested errors).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_map_to_their_tokens() {
        assert_eq!(
            word_tokens(&["a", " red", " cir", "cle"]),
            vec![vec![0], vec![1], vec![2, 3]]
        );
        assert_eq!(
            word_tokens(&[" two", " words ", "x"]),
            vec![vec![0], vec![1], vec![2]]
        );
        // An empty token inside a word carries none of it.
        assert_eq!(word_tokens(&["cir", "", "cle"]), vec![vec![0, 2]]);
        assert!(word_tokens(&[]).is_empty());
        assert!(word_tokens(&["  ", "\n"]).is_empty());
    }

    #[test]
    fn phrases_map_to_the_tokens_covering_them() {
        let texts = ["A", " red", " suit", "case", " and", " a", " case", "."];
        assert_eq!(find_word(&texts, "red"), Some(1..2));
        assert_eq!(find_word(&texts, "SUITCASE"), Some(2..4));
        // "case" alone is a whole word later on; prefer it to the inner match.
        assert_eq!(find_word(&texts, "case"), Some(6..7));
        assert_eq!(find_word(&texts, "red suit"), Some(1..3));
        assert_eq!(find_word(&texts, "a"), Some(0..1));
        assert_eq!(find_word(&texts, "uitc"), Some(2..4));
        assert_eq!(find_word(&texts, "blue"), None);
        assert_eq!(find_word(&texts, " "), None);
    }

    #[test]
    fn messages_fold_onto_one_line() {
        assert_eq!(one_line("bad\n  thing\t here "), "bad thing here");
    }
}
