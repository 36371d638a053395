//! The last problems worth an operator's look (a slow consumer cut off, Redis failing, a
//! webhook receiver refusing), kept for the status page: a few dozen lines, newest last.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use crate::clock::now_ms;

/// Notes kept, at most; the oldest go first.
const KEPT: usize = 50;

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// When, Unix ms.
    pub at_ms: u64,
    /// What happened.
    pub text: String,
}

/// The last [`KEPT`] notes.
#[derive(Debug, Default)]
pub struct Notes {
    notes: Mutex<VecDeque<Note>>,
}

impl Notes {
    /// Keeps `text`, dropping the oldest note beyond the bound.
    pub fn note(&self, text: impl Into<String>) {
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        if notes.len() == KEPT {
            notes.pop_front();
        }
        notes.push_back(Note {
            at_ms: now_ms(),
            text: text.into(),
        });
    }

    /// The notes kept, oldest first.
    pub fn list(&self) -> Vec<Note> {
        let notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        notes.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept() {
        let notes = Notes::default();
        for n in 0..KEPT + 3 {
            notes.note(format!("problem {n}"));
        }
        let list = notes.list();
        assert_eq!(list.len(), KEPT);
        assert_eq!(list[0].text, "problem 3");
        assert_eq!(list[KEPT - 1].text, format!("problem {}", KEPT + 2));
    }
}
