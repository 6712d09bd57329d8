//! [`FramePool`]: the page-frame allocator every platform uses.
//!
//! A platform hands the pool a run of frames (its free memory) and gets
//! frames back one at a time: freed frames first (a stack, so the frame
//! freed last, still warm, is reused first), then fresh ones from the run.
//! Alloc and free are a few instructions each and the same in every
//! build, so they cancel out when the builds are compared.
//!
//! Frames are plain numbers here (a physical address, a pfn: whatever the
//! platform counts in); the pool never touches their memory, which is why
//! it is safe code and why zeroing is the platform's job.
//!
//! A platform may also hand in single frames ([`FramePool::add_frame`]),
//! for frames that do not form a run.
//!
//! The free stack is a fixed array (no heap in the native kernel). It can
//! never overflow: the pool never knows more than `CAP` frames (handed in,
//! or handed out fresh), and only those can come back.

/// A frame allocator over a run of frames (see the module docs).
pub struct FramePool<const CAP: usize> {
    /// The next fresh frame.
    next: u64,
    /// The end of the run.
    end: u64,
    /// Distance between neighbouring frames (4096 for addresses, 1 for numbers).
    step: u64,
    /// Frames the pool has known: handed out fresh or handed in (at most `CAP`).
    known: usize,
    /// Freed frames, the last freed on top.
    free: [u64; CAP],
    /// Frames on the free stack.
    free_len: usize,
}

impl<const CAP: usize> FramePool<CAP> {
    /// A pool with no frames (give it some with [`FramePool::add_run`]).
    pub const fn empty() -> Self {
        FramePool { next: 0, end: 0, step: 1, known: 0, free: [0; CAP], free_len: 0 }
    }

    /// Hands the pool the frames `start, start + step, ...` below `end`.
    /// Replaces any earlier run (call it once, at boot).
    pub fn add_run(&mut self, start: u64, end: u64, step: u64) {
        assert!(step > 0, "frames are at least one apart");
        self.next = start;
        self.end = end;
        self.step = step;
    }

    /// A frame, or `None` when the run is used up (or `CAP` frames are out).
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free_len > 0 {
            self.free_len -= 1;
            return Some(self.free[self.free_len]);
        }
        if self.next >= self.end || self.known == CAP {
            return None;
        }
        let frame = self.next;
        self.next += self.step;
        self.known += 1;
        Some(frame)
    }

    /// Hands the pool one more free frame.
    ///
    /// # Panics
    ///
    /// If the pool knows `CAP` frames already.
    pub fn add_frame(&mut self, frame: u64) {
        assert!(self.known < CAP, "a frame pool holds at most {CAP} frames");
        self.known += 1;
        self.free[self.free_len] = frame;
        self.free_len += 1;
    }

    /// Gives `frame` back.
    ///
    /// # Panics
    ///
    /// If more frames come back than were handed out (a double free).
    pub fn free(&mut self, frame: u64) {
        assert!(self.free_len < self.known, "frame {frame:#x} freed but never allocated (double free?)");
        self.free[self.free_len] = frame;
        self.free_len += 1;
    }

    /// Frames handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.known - self.free_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_run_then_reuses_the_last_freed_first() {
        let mut pool = FramePool::<4>::empty();
        pool.add_run(0x1000, 0x4000, 0x1000);
        assert_eq!(pool.alloc(), Some(0x1000));
        assert_eq!(pool.alloc(), Some(0x2000));
        pool.free(0x1000);
        pool.free(0x2000);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.alloc(), Some(0x2000));
        assert_eq!(pool.alloc(), Some(0x1000));
        assert_eq!(pool.alloc(), Some(0x3000));
        assert_eq!(pool.alloc(), None, "the run ends at 0x4000");
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn never_hands_out_more_fresh_frames_than_it_can_take_back() {
        let mut pool = FramePool::<2>::empty();
        pool.add_run(0, 100, 1);
        assert_eq!((pool.alloc(), pool.alloc(), pool.alloc()), (Some(0), Some(1), None));
    }

    #[test]
    fn single_frames_can_be_handed_in() {
        let mut pool = FramePool::<3>::empty();
        pool.add_frame(7);
        pool.add_frame(3);
        assert_eq!(pool.in_use(), 0);
        assert_eq!((pool.alloc(), pool.alloc(), pool.alloc()), (Some(3), Some(7), None));
        pool.free(3);
        assert_eq!(pool.alloc(), Some(3));
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn a_double_free_is_caught() {
        let mut pool = FramePool::<2>::empty();
        pool.add_run(0, 100, 1);
        let f = pool.alloc().unwrap();
        pool.free(f);
        pool.free(f);
    }
}
