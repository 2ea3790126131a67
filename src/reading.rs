//! One outside read (a database, a store, a query): not asked, answered, or failed with why.
//! A type of its own, not `Option<Result<_, _>>`, so "not asked this reconcile" and "asked and
//! failed" read as what they are.

/// One outside read this reconcile: not asked (the stage did not need it), answered, or failed
/// with the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reading<T, E = String> {
    #[default]
    NotAsked,
    Answered(T),
    Failed(E),
}

impl<T, E> Reading<T, E> {
    /// The answer of `read` when `asked`, else not asked.
    pub fn when(asked: bool, read: impl FnOnce() -> std::result::Result<T, E>) -> Self {
        match asked {
            true => read().into(),
            false => Reading::NotAsked,
        }
    }

    pub fn answered(&self) -> Option<&T> {
        match self {
            Reading::Answered(t) => Some(t),
            _ => None,
        }
    }

    pub fn answered_mut(&mut self) -> Option<&mut T> {
        match self {
            Reading::Answered(t) => Some(t),
            _ => None,
        }
    }

    pub fn failed(&self) -> Option<&E> {
        match self {
            Reading::Failed(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_asked(&self) -> bool {
        !matches!(self, Reading::NotAsked)
    }
}

impl<T, E> From<std::result::Result<T, E>> for Reading<T, E> {
    fn from(r: std::result::Result<T, E>) -> Self {
        match r {
            Ok(t) => Reading::Answered(t),
            Err(e) => Reading::Failed(e),
        }
    }
}
