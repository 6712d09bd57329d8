//! Host tests of single-stepping a paravirtualized guest (TF): every trap
//! is delivered with TF clear, and a hypercall made with TF set owes the
//! guest kernel one single-step trap after it (see `hypercall_abi::trap`).

use crate::domain::Ending;
use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::{MachineMemory, TestMemory};
use crate::manifest::Expect;
use crate::system::{Door, Next, Platform, System};
use crate::testing::system_with;
use crate::vcpu::{GuestRegs, HANDLER_RFLAGS, RFLAGS_TF};
use hypercall_abi::event::UPCALL_PENDING_OFFSET;
use hypercall_abi::trap::{debug_cause, frame_flags, TrapFrame, TrapInfo, VECTOR_DEBUG, VECTOR_EVENT, VECTOR_SYSCALL};
use hypercall_abi::{decode_result, Hypercall, StartInfo, ABI_VERSION};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// RFLAGS.NT and RFLAGS.RF.
const NT: u64 = 1 << 14;
const RF: u64 = 1 << 16;

struct World {
    sys: System,
    mem: TestMemory,
    regs: GuestRegs,
    si: Vec<StartInfo>,
}

/// Where each domain's handlers are (any guest addresses will do: the
/// logic never runs them).
fn handler(si: &StartInfo, vector: u64) -> u64 {
    si.image_start + 0x100 + vector * 8
}
fn syscall_callback(si: &StartInfo) -> u64 {
    si.image_start + 0x80
}
fn event_callback(si: &StartInfo) -> u64 {
    si.image_start + 0x90
}

impl World {
    /// `n` domains, domain 0 running; each registered a handler for every
    /// exception vector, the two callbacks and a kernel stack.
    fn new(n: u16) -> World {
        let (mut sys, mut mem) = system_with(n, Expect::Exit(0));
        let mut regs = GuestRegs::default();
        sys.start(&mut Platform { mem: &mut mem, console: &mut String::new(), tsc: 0 }, &mut regs);
        let mut w = World { sys, mem, regs, si: Vec::new() };
        for i in 0..n {
            let d = &w.sys.domains[usize::from(i)];
            let mut bytes = [0u8; core::mem::size_of::<StartInfo>()];
            let at = d.vcpu.regs.rdi;
            GuestView { mem: &mut w.mem, frames: &w.sys.frames, domain: d.id, root: d.vcpu.kernel_root }
                .read(GuestSlice::new(at, bytes.len() as u64), &mut bytes)
                .unwrap();
            w.si.push(StartInfo::read_from_bytes(&bytes).unwrap());
        }
        for i in 0..usize::from(n) {
            assert_eq!(w.running(), Some(i));
            let si = w.si[i];
            let table: Vec<TrapInfo> = (0..32).map(|v| TrapInfo { vector: v, handler: handler(&si, v) }).collect();
            w.poke(si.free_start, table.as_slice());
            assert_eq!(w.call(Hypercall::SetTrapTable, &[si.free_start, 32]), Ok(0));
            assert_eq!(w.call(Hypercall::SetCallbacks, &[syscall_callback(&si), event_callback(&si)]), Ok(0));
            assert_eq!(w.call(Hypercall::StackSwitch, &[si.stack_top]), Ok(0));
            w.regs.rsp = si.stack_top - 0x800;
            if n > 1 {
                w.call(Hypercall::Yield, &[]).unwrap();
            }
        }
        w
    }

    fn running(&self) -> Option<usize> {
        self.sys.current().map(|d| usize::from(d.id.0))
    }

    fn load(&mut self, h: Hypercall, args: &[u64]) {
        self.regs.rax = h as u64;
        let slots = [&mut self.regs.rdi, &mut self.regs.rsi, &mut self.regs.rdx, &mut self.regs.r10];
        for (slot, a) in slots.into_iter().zip(args) {
            *slot = *a;
        }
        // As after `syscall`: the return address in rcx, the flags in r11.
        self.regs.rcx = self.regs.rip;
        self.regs.r11 = self.regs.rflags;
        self.regs.vector = VECTOR_SYSCALL;
    }

    fn call(&mut self, h: Hypercall, args: &[u64]) -> Result<u64, hypercall_abi::HypercallError> {
        self.load(h, args);
        let mut p = Platform { mem: &mut self.mem, console: &mut String::new(), tsc: 0 };
        let next = self.sys.on_hypercall(&mut p, &mut self.regs);
        assert!(!matches!(next, Next::Finished { .. }), "{next:?}");
        decode_result(self.regs.rax)
    }

    /// A hypercall made with TF set, as the kernel's stepped door hands it over.
    fn stepped(&mut self, h: Hypercall, args: &[u64]) -> Next {
        self.regs.rflags |= RFLAGS_TF;
        self.load(h, args);
        let mut p = Platform { mem: &mut self.mem, console: &mut String::new(), tsc: 0 };
        self.sys.on_stepped_hypercall(&mut p, &mut self.regs)
    }

    /// An exception `vector` at `rip` with these flags.
    fn exception(&mut self, vector: u64, rip: u64, rflags: u64) -> Next {
        self.regs = GuestRegs { vector, error_code: 0, rip, rflags, ..self.regs };
        let mut p = Platform { mem: &mut self.mem, console: &mut String::new(), tsc: 0 };
        self.sys.on_guest_exception(&mut p, &mut self.regs, 0)
    }

    fn view(&mut self, d: usize) -> GuestView<'_, TestMemory> {
        let d = &self.sys.domains[d];
        GuestView { mem: &mut self.mem, frames: &self.sys.frames, domain: d.id, root: d.vcpu.kernel_root }
    }

    fn poke<T: IntoBytes + zerocopy::Immutable + ?Sized>(&mut self, va: u64, value: &T) {
        let d = self.running().unwrap();
        self.view(d).write(GuestSlice::new(va, value.as_bytes().len() as u64), value.as_bytes()).unwrap();
    }

    /// The trap frame at `va` in domain `d`'s kernel space.
    fn frame_at(&mut self, d: usize, va: u64) -> TrapFrame {
        let mut f = TrapFrame::new_zeroed();
        self.view(d).read(GuestSlice::new(va, 80), f.as_mut_bytes()).unwrap();
        f
    }
}

#[test]
fn every_trap_enters_its_handler_on_known_flags_without_tf_and_the_frame_keeps_the_flags() {
    let mut w = World::new(1);
    let si = w.si[0];
    let stepping = 0x202 | RFLAGS_TF | NT | RF | 0x1; // and CF: a flag that stays
    // An exception (`ud2` while single-stepping).
    w.exception(6, si.image_start + 0x40, stepping);
    assert_eq!(w.regs.rip, handler(&si, 6));
    assert_eq!(w.regs.rflags, HANDLER_RFLAGS, "the handler runs on known flags: no TF, RF, NT");
    assert_eq!(w.frame_at(0, w.regs.rsp).rflags, stepping, "iret gives them back");
    // An event upcall to code that runs with TF set (at the next timer tick).
    w.regs.rflags = stepping;
    w.mem.write(w.sys.domains[0].shared_info + UPCALL_PENDING_OFFSET as u64, &[1, 0]); // pending, not masked
    w.sys.domains[0].events.upcall_due = true;
    let next = w.sys.on_timer(&mut Platform { mem: &mut w.mem, console: &mut String::new(), tsc: 0 }, &mut w.regs);
    assert_eq!(next, Next::RESUME);
    assert_eq!(w.regs.rip, event_callback(&si));
    assert_eq!(w.regs.rflags, HANDLER_RFLAGS);
    // A system call from user mode made with TF set.
    let vcpu = &mut w.sys.domains[0].vcpu;
    (vcpu.kernel_mode, vcpu.user_root) = (false, Some(vcpu.kernel_root));
    w.regs.rflags = stepping;
    w.load(Hypercall::AbiVersion, &[]);
    w.sys.on_user_syscall(&mut Platform { mem: &mut w.mem, console: &mut String::new(), tsc: 0 }, &mut w.regs);
    assert_eq!(w.regs.rip, syscall_callback(&si));
    assert_eq!(w.regs.rflags, HANDLER_RFLAGS);
    let f = w.frame_at(0, w.regs.rsp);
    assert_eq!((f.vector, f.rflags, f.r11), (VECTOR_SYSCALL, stepping, stepping), "the kernel sees the user's TF");
}

#[test]
fn a_hypercall_made_with_tf_set_is_followed_by_one_single_step_trap() {
    let mut w = World::new(1);
    let si = w.si[0];
    let at = si.image_start + 0x40;
    w.regs.rip = at + 2; // after the `syscall`
    let sp = w.regs.rsp;
    let next = w.stepped(Hypercall::AbiVersion, &[]);
    assert_eq!(next, Next::RESUME, "the same mode and table");
    assert_eq!(w.regs.rip, handler(&si, VECTOR_DEBUG));
    assert_eq!(w.regs.rflags & RFLAGS_TF, 0);
    let f = w.frame_at(0, w.regs.rsp);
    assert_eq!((f.vector, f.error_code, f.rip, f.rsp), (VECTOR_DEBUG, debug_cause::SINGLE_STEP, at + 2, sp));
    assert_eq!(decode_result(f.rax), Ok(u64::from(ABI_VERSION)), "after the hypercall completed");
    assert_eq!(f.rflags & RFLAGS_TF, RFLAGS_TF);
    assert!(!w.sys.domains[0].vcpu.single_step_owed);
    // The handler's own hypercalls (TF clear) owe nothing.
    let bounces = w.sys.domains[0].stats.bounces;
    assert_eq!(w.call(Hypercall::AbiVersion, &[]), Ok(u64::from(ABI_VERSION)));
    assert_eq!(w.sys.domains[0].stats.bounces, bounces);
}

#[test]
fn a_stepped_iret_traps_at_the_frame_it_returned_to() {
    let mut w = World::new(1);
    let si = w.si[0];
    let vcpu = &mut w.sys.domains[0].vcpu;
    vcpu.user_root = Some(vcpu.kernel_root);
    let target = si.image_start + 0x60;
    let to_user = TrapFrame { rip: target, rsp: 0x7000, rflags: 0x202, flags: frame_flags::FROM_USER, rax: 9, ..Default::default() };
    let at = si.stack_top - 0x400;
    w.poke(at, &to_user);
    w.regs.rsp = at;
    let next = w.stepped(Hypercall::Iret, &[]);
    assert_eq!(next, Next::RESUME, "to user mode and back to the kernel: nothing to reload");
    assert!(w.sys.domains[0].vcpu.kernel_mode);
    assert_eq!(w.regs.rip, handler(&si, VECTOR_DEBUG));
    let f = w.frame_at(0, w.regs.rsp);
    assert_eq!((f.vector, f.error_code, f.flags, f.rip, f.rsp, f.rax), (VECTOR_DEBUG, debug_cause::SINGLE_STEP, frame_flags::FROM_USER, target, 0x7000, 9));
    assert_eq!(w.regs.rsp, (si.stack_top - 80) & !15, "on the kernel stack, as any trap from user mode");
}

#[test]
fn a_stepped_hypercall_that_gives_up_the_cpu_gets_its_trap_first_when_it_runs_again() {
    let mut w = World::new(2);
    let si = w.si[0];
    w.regs.rip = si.image_start + 0x22;
    let sp = w.regs.rsp;
    w.stepped(Hypercall::Yield, &[]);
    assert_eq!(w.running(), Some(1));
    // An event for domain 0 is pending by the time it runs again.
    w.mem.write(w.sys.domains[0].shared_info + UPCALL_PENDING_OFFSET as u64, &[1, 0]); // pending, not masked
    w.call(Hypercall::Yield, &[]).unwrap();
    assert_eq!(w.running(), Some(0));
    // The upcall came on top of the single-step trap, which was first.
    assert_eq!(w.regs.rip, event_callback(&si));
    let upcall = w.frame_at(0, w.regs.rsp);
    assert_eq!((upcall.vector, upcall.rip), (VECTOR_EVENT, handler(&si, VECTOR_DEBUG)));
    let step = w.frame_at(0, upcall.rsp);
    assert_eq!((step.vector, step.rip, step.rsp, decode_result(step.rax)), (VECTOR_DEBUG, si.image_start + 0x22, sp, Ok(0)));
}

#[test]
fn a_stepped_bench_floor_ends_the_floor_with_its_trap() {
    let mut w = World::new(1);
    let si = w.si[0];
    let next = w.stepped(Hypercall::BenchFloor, &[]);
    assert!(matches!(next, Next::Switch { door: Door::Kernel, .. }), "{next:?}");
    assert!(!w.sys.domains[0].vcpu.bench_floor);
    assert_eq!(w.regs.rip, handler(&si, VECTOR_DEBUG));
}

#[test]
fn a_single_step_trap_without_a_handler_stops_the_domain_as_a_debug_exception() {
    let mut w = World::new(1);
    let si = w.si[0];
    let table = [TrapInfo { vector: 6, handler: handler(&si, 6) }];
    w.poke(si.free_start, &table);
    assert_eq!(w.call(Hypercall::SetTrapTable, &[si.free_start, 1]), Ok(0));
    w.regs.rip = si.image_start + 0x30;
    let next = w.stepped(Hypercall::AbiVersion, &[]);
    assert_eq!(next, Next::Finished { all_as_expected: false });
    let Some(Ending::Crashed(what)) = &w.sys.domains[0].ending else { panic!() };
    assert_eq!(what.as_str(), format!("#DB at {:#x}", si.image_start + 0x30));
}
