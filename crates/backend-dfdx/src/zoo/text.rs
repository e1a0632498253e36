//! Vocabularies and tokenisation for the models that read text (captions,
//! questions) and the answer lists of VQA.

use std::collections::HashMap;
use std::path::Path;

use attrib_core::{Error, Result};

/// Tokens by index, read from a text file with one token per line in index order
/// (the captioning tutorial's `vocab.pkl` written out: `<pad>`, `<start>`, `<end>`,
/// `<unk>`, then the words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, usize>,
}

/// A text turned into token indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The indices.
    pub ids: Vec<usize>,
    /// The words, as split (unknown ones included, as written).
    pub words: Vec<String>,
    /// Words not in the vocabulary, mapped to `<unk>`.
    pub unknown: Vec<String>,
}

impl Vocab {
    /// From tokens in index order; they must be distinct and non-empty.
    pub fn new(tokens: Vec<String>) -> Result<Self> {
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() || t.chars().any(char::is_whitespace) {
                return Err(Error::param(
                    "vocabulary",
                    format!("entry {i} ({t:?}) is empty or contains whitespace"),
                ));
            }
            if let Some(j) = index.insert(t.clone(), i) {
                return Err(Error::param(
                    "vocabulary",
                    format!("`{t}` appears twice (entries {j} and {i})"),
                ));
            }
        }
        if tokens.is_empty() {
            return Err(Error::param("vocabulary", "no tokens"));
        }
        Ok(Vocab { tokens, index })
    }

    /// Reads one token per line (trailing spaces and a final newline ignored).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        Self::new(lines).map_err(|e| match e {
            Error::InvalidParameter { name, reason } => Error::InvalidParameter {
                name: format!("{name} {}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none (never, for a constructed vocabulary).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Token `i`.
    pub fn token(&self, i: usize) -> &str {
        self.tokens.get(i).map_or("<?>", String::as_str)
    }

    /// The index of `token`.
    pub fn id(&self, token: &str) -> Option<usize> {
        self.index.get(token).copied()
    }

    /// The index of a special token the model needs.
    pub fn special(&self, token: &str) -> Result<usize> {
        self.id(token).ok_or_else(|| {
            Error::param(
                "vocabulary",
                format!("it has no `{token}` token, which the model needs"),
            )
        })
    }

    /// Lower-cases `text` and splits it into words and punctuation marks (each mark a
    /// token, as NLTK's `word_tokenize` mostly does); words not in the vocabulary map
    /// to `<unk>` and are listed. An empty text is an error.
    pub fn tokenize(&self, text: &str, what: &str) -> Result<Tokens> {
        let words = split_words(text);
        if words.is_empty() {
            return Err(Error::param(what, "is empty"));
        }
        let mut unknown = Vec::new();
        let mut ids = Vec::with_capacity(words.len());
        for w in &words {
            match self.id(w) {
                Some(i) => ids.push(i),
                None => {
                    unknown.push(w.clone());
                    ids.push(self.special("<unk>")?);
                }
            }
        }
        Ok(Tokens {
            ids,
            words,
            unknown,
        })
    }
}

/// Lower-cased words (letters, digits, apostrophes) and punctuation marks.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        Vocab::new(
            [
                "<pad>", "<start>", "<end>", "<unk>", "a", "cat", "on", "sofa", ".",
            ]
            .map(String::from)
            .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn tokenize_lowercases_splits_punctuation_and_reports_unknown_words() {
        let t = vocab()
            .tokenize("A Cat on a SOFA, purring.", "caption")
            .unwrap();
        assert_eq!(
            t.words,
            ["a", "cat", "on", "a", "sofa", ",", "purring", "."]
        );
        assert_eq!(t.ids, [4, 5, 6, 4, 7, 3, 3, 8]);
        assert_eq!(t.unknown, [",", "purring"]);
        assert_eq!(
            vocab().tokenize("  ", "caption").unwrap_err().to_string(),
            "invalid caption: is empty"
        );
    }

    #[test]
    fn vocabularies_are_checked() {
        let dup = Vocab::new(vec!["a".into(), "b".into(), "a".into()]).unwrap_err();
        assert_eq!(
            dup.to_string(),
            "invalid vocabulary: `a` appears twice (entries 0 and 2)"
        );
        let v = Vocab::new(vec!["a".into()]).unwrap();
        assert_eq!(
            v.special("<end>").unwrap_err().to_string(),
            "invalid vocabulary: it has no `<end>` token, which the model needs"
        );
    }
}
