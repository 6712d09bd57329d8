//! Which domain runs next: round robin over the runnable ones.
//!
//! Domains give up the CPU only by yielding, exiting or crashing (preemption
//! comes with the platform timer). The current domain is not in the queue;
//! a yield puts it at the back and takes the front.

use crate::domain::DomainId;
use alloc::collections::VecDeque;

/// The run queue.
#[derive(Clone, Debug, Default)]
pub struct RunQueue {
    ready: VecDeque<DomainId>,
}

impl RunQueue {
    /// Adds a domain at the back.
    pub fn push(&mut self, id: DomainId) {
        self.ready.push_back(id);
    }

    /// Takes the domain at the front.
    pub fn pop(&mut self) -> Option<DomainId> {
        self.ready.pop_front()
    }

    /// Removes a domain wherever it is.
    pub fn remove(&mut self, id: DomainId) {
        self.ready.retain(|d| *d != id);
    }

    /// Whether no domain waits.
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// Number of waiting domains.
    pub fn len(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_order() {
        let mut q = RunQueue::default();
        for i in 0..3 {
            q.push(DomainId(i));
        }
        q.remove(DomainId(1));
        assert_eq!(q.pop(), Some(DomainId(0)));
        q.push(DomainId(0));
        assert_eq!(q.pop(), Some(DomainId(2)));
        assert_eq!(q.pop(), Some(DomainId(0)));
        assert_eq!(q.pop(), None);
    }
}
