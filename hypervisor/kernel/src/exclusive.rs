//! One-CPU exclusive access without atomics.
//!
//! The hypervisor runs on one CPU with interrupts off in ring 0 and is never
//! re-entered: an entry from a guest runs to its end before the next one.
//! So the global state needs no lock, only a check that nobody is already
//! inside it (a hypervisor fault while it is borrowed, say). [`Exclusive`]
//! is that check: a plain flag, not a lock prefix on every hypercall.

use core::cell::{Cell, UnsafeCell};

/// A value reached only through [`Exclusive::with`].
pub struct Exclusive<T> {
    value: UnsafeCell<T>,
    busy: Cell<bool>,
}

// SAFETY: Parvus runs ring-0 code on one CPU with interrupts disabled, and
// `with` refuses to hand out a second reference while one is live, so the
// value is never accessed from two places at once.
unsafe impl<T> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Exclusive { value: UnsafeCell::new(value), busy: Cell::new(false) }
    }

    /// Runs `f` with the only reference to the value. Panics if called
    /// while another `with` is running (re-entry is a hypervisor bug).
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        assert!(!self.busy.replace(true), "re-entered the hypervisor's global state");
        // SAFETY: the busy flag was clear, so no other reference exists, and
        // the single-CPU, interrupts-off rule means none appears during `f`.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        result
    }
}
