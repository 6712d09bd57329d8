//! Delivering an interrupt or exception to an emulated kernel through its own IDT.
//!
//! On a real CPU an interrupt in long mode reads the gate of its vector
//! from the IDT, switches to the kernel stack named by the TSS if the
//! privilege level changes (or to an IST stack if the gate asks for one),
//! aligns it to 16 bytes, pushes SS, RSP, RFLAGS, CS, RIP and, for some
//! exceptions, an error code, and jumps to the gate's offset with CPL 0
//! and, for an interrupt gate, IF clear (Intel SDM vol. 3, 6.14). The
//! emulated kernel's IDT, TSS and stacks are in its own memory and its IF
//! is virtual, so the hypervisor does exactly those steps itself: this is
//! the only way a virtual interrupt, or a fault the guest must handle
//! (its own page faults, its user processes' errors), reaches it.
//!
//! What a real CPU would turn into a double fault or a triple fault (no
//! gate, a stack it cannot push on) stops the domain with a report.

use super::cpu::VirtualCpu;
use super::guest_virt::{GuestVirt, VirtFault};
use crate::machine_memory::MachineMemory;
use crate::vcpu::GuestRegs;

/// RFLAGS bits an interrupt clears besides IF: TF, NT, RF.
const CLEARED_ON_DELIVERY: u64 = (1 << 8) | (1 << 14) | (1 << 16);

/// What is being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A CPU exception, with the error code it pushes (if any).
    Exception {
        /// The error code.
        error_code: Option<u64>,
    },
    /// An external interrupt from the virtual PIC.
    External,
    /// An `int n` instruction (the gate's DPL must allow the caller).
    Software,
}

/// Why the event could not be delivered; a real CPU would have double- or
/// triple-faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The vector is beyond the IDT limit or its gate is not present (or
    /// not an interrupt or trap gate, or its handler address is not
    /// canonical).
    NoGate(u8),
    /// The IDT, the TSS or the new stack could not be accessed.
    Memory(VirtFault),
    /// The gate asks for a stack from a TSS, but no TSS was loaded (`ltr`).
    NoTss(u8),
}

impl core::fmt::Display for InjectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InjectError::NoGate(v) => write!(f, "its IDT has no usable gate for vector {v:#x}"),
            InjectError::Memory(VirtFault::PageFault { va, error_code }) => write!(
                f,
                "the IDT, TSS or kernel stack is not accessible (#PF at {va:#x}, error code {error_code:#x})"
            ),
            InjectError::Memory(VirtFault::NotRam(n)) => write!(f, "the IDT, TSS or kernel stack is not in RAM ({n})"),
            InjectError::NoTss(v) => write!(f, "vector {v:#x} needs a stack from the TSS, but no TSS is loaded"),
        }
    }
}

/// One IDT gate, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Handler address.
    pub offset: u64,
    /// Code selector to run it with.
    pub selector: u16,
    /// IST slot (0: none).
    pub ist: u8,
    /// An interrupt gate (clears IF), else a trap gate.
    pub interrupt: bool,
    /// Lowest privilege allowed to reach it with `int n`.
    pub dpl: u8,
}

/// Reads the gate of `vector` from the guest's IDT.
pub fn read_gate<M: MachineMemory>(cpu: &VirtualCpu, mem: &GuestVirt<'_, M>, vector: u8) -> Result<Gate, InjectError> {
    let at = u64::from(vector) * 16;
    if at + 15 > u64::from(cpu.idtr.limit) {
        return Err(InjectError::NoGate(vector));
    }
    let mut raw = [0u8; 16];
    mem.read(cpu.idtr.base.wrapping_add(at), &mut raw, false).map_err(InjectError::Memory)?;
    let attributes = raw[5];
    let kind = attributes & 0x0f;
    if attributes & 0x80 == 0 || !(kind == 0x0e || kind == 0x0f) {
        return Err(InjectError::NoGate(vector));
    }
    let offset = u64::from(u16::from_le_bytes([raw[0], raw[1]]))
        | (u64::from(u16::from_le_bytes([raw[6], raw[7]])) << 16)
        | (u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]])) << 32);
    if !super::cpu::canonical(offset) {
        // The CPU cannot jump there (#GP while delivering, then a double
        // fault), and the hypervisor's `iretq` to it would fault in ring 0.
        return Err(InjectError::NoGate(vector));
    }
    Ok(Gate {
        offset,
        selector: u16::from_le_bytes([raw[2], raw[3]]),
        ist: raw[4] & 7,
        interrupt: kind == 0x0e,
        dpl: (attributes >> 5) & 3,
    })
}

/// Delivers `vector` to the guest whose registers are `regs` (with `rip`
/// already where the handler's `iretq` must return). Returns whether the
/// guest's privilege level changed (user to kernel), which means the
/// hypervisor must switch to the kernel's shadow tables.
pub fn deliver<M: MachineMemory>(
    cpu: &mut VirtualCpu,
    regs: &mut GuestRegs,
    mem: &mut GuestVirt<'_, M>,
    vector: u8,
    kind: EventKind,
) -> Result<bool, InjectError> {
    // The CPU reaches the IDT, the TSS and the new stack as the kernel.
    mem.user = false;
    let gate = read_gate(cpu, mem, vector)?;
    if kind == EventKind::Software && gate.dpl < cpu.cpl {
        // `int n` to a gate the caller may not use is a #GP naming the gate.
        let error_code = Some(u64::from(vector) * 8 + 2);
        return deliver(cpu, regs, mem, 13, EventKind::Exception { error_code });
    }
    let to_kernel = cpu.cpl != 0;
    let stack = if gate.ist != 0 || to_kernel {
        if cpu.tss_base == 0 {
            return Err(InjectError::NoTss(vector));
        }
        let slot = if gate.ist != 0 { 0x24 + 8 * (u64::from(gate.ist) - 1) } else { 4 };
        mem.read_u64(cpu.tss_base.wrapping_add(slot)).map_err(InjectError::Memory)?
    } else {
        regs.rsp
    };
    let mut frame = [0u64; 6];
    frame[1] = regs.rip;
    frame[2] = u64::from(cpu.cs);
    frame[3] = cpu.visible_rflags(regs.rflags);
    frame[4] = regs.rsp;
    frame[5] = u64::from(cpu.ss);
    let words: &[u64] = match kind {
        EventKind::Exception { error_code: Some(code) } => {
            frame[0] = code;
            &frame
        }
        _ => &frame[1..],
    };
    let new_rsp = (stack & !0xf).wrapping_sub(words.len() as u64 * 8);
    let mut bytes = [0u8; 48];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    mem.write(new_rsp, &bytes[..words.len() * 8]).map_err(InjectError::Memory)?;
    regs.rsp = new_rsp;
    regs.rip = gate.offset;
    regs.rflags &= !CLEARED_ON_DELIVERY;
    if gate.interrupt {
        cpu.interrupts = false;
    }
    if to_kernel {
        cpu.ss = 0; // a privilege change loads a null SS in long mode
    }
    cpu.cs = gate.selector;
    cpu.cpl = 0;
    Ok(to_kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulated::cpu::TableRegister;
    use crate::emulated::guest_phys::GuestPhys;
    use crate::emulated::guest_virt::tests::identity_guest;

    const IDT: u64 = 0x8000;
    const TSS: u64 = 0x9000;

    fn gate(offset: u64, ist: u8, kind: u8, dpl: u8) -> [u8; 16] {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(offset as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x08u16.to_le_bytes());
        g[4] = ist;
        g[5] = 0x80 | (dpl << 5) | kind;
        g[6..8].copy_from_slice(&((offset >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((offset >> 32) as u32).to_le_bytes());
        g
    }

    fn setup(mem: &mut GuestVirt<'_, crate::machine_memory::TestMemory>) -> VirtualCpu {
        let mut cpu = VirtualCpu::at_boot(0x1000, TableRegister::default());
        cpu.idtr = TableRegister { base: IDT, limit: 256 * 16 - 1 };
        cpu.tss_base = TSS;
        mem.write(IDT + 14 * 16, &gate(0x20_1000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 0x20 * 16, &gate(0x20_2000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 0x80 * 16, &gate(0x20_3000, 0, 0x0f, 3)).unwrap();
        mem.write(IDT + 0x81 * 16, &gate(0x20_4000, 0, 0x0e, 0)).unwrap();
        mem.write(IDT + 8 * 16, &gate(0x20_5000, 1, 0x0e, 0)).unwrap();
        mem.write(TSS + 4, &0x1_0000u64.to_le_bytes()).unwrap(); // RSP0
        mem.write(TSS + 0x24, &0x1_8000u64.to_le_bytes()).unwrap(); // IST1
        cpu
    }

    fn stack_words<M: MachineMemory>(mem: &GuestVirt<'_, M>, rsp: u64, n: usize) -> alloc::vec::Vec<u64> {
        (0..n).map(|i| mem.read_u64(rsp + 8 * i as u64).unwrap()).collect()
    }

    #[test]
    fn a_user_page_fault_switches_to_rsp0_and_pushes_the_error_code() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        (cpu.cpl, cpu.cs, cpu.ss, cpu.interrupts) = (3, 0x23, 0x1b, true);
        let mut regs = GuestRegs { rip: 0x8000_0000, rsp: 0x7777, rflags: 0x202 | 0x100, ..Default::default() };
        let changed = deliver(&mut cpu, &mut regs, &mut mem, 14, EventKind::Exception { error_code: Some(6) }).unwrap();
        assert!(changed);
        assert_eq!((regs.rip, regs.rsp), (0x20_1000, 0x1_0000 - 48));
        assert_eq!(stack_words(&mem, regs.rsp, 6), [6, 0x8000_0000, 0x23, 0x302, 0x7777, 0x1b]);
        assert_eq!((cpu.cpl, cpu.cs, cpu.ss, cpu.interrupts), (0, 0x08, 0, false));
        assert_eq!(regs.rflags & 0x100, 0, "TF cleared");
        assert_eq!(regs.rflags & 0x200, 0x200, "the real IF stays on");
    }

    #[test]
    fn a_kernel_interrupt_stays_on_its_aligned_stack_and_shows_the_virtual_if() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        cpu.interrupts = true;
        let mut regs = GuestRegs { rip: 0x20_0010, rsp: 0x1_2348, rflags: 0x246, ..Default::default() };
        assert!(!deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External).unwrap());
        assert_eq!(regs.rsp, 0x1_2340 - 40);
        assert_eq!(stack_words(&mem, regs.rsp, 5), [0x20_0010, 0x08, 0x246, 0x1_2348, 0x10]);
        assert!(!cpu.interrupts);
    }

    #[test]
    fn ist_gates_and_trap_gates() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        let mut regs = GuestRegs { rsp: 0x1_2340, rflags: 0x202, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 8, EventKind::Exception { error_code: Some(0) }).unwrap();
        assert_eq!(regs.rsp, 0x1_8000 - 48);
        cpu.interrupts = true;
        (cpu.cpl, cpu.cs) = (3, 0x23);
        deliver(&mut cpu, &mut regs, &mut mem, 0x80, EventKind::Software).unwrap();
        assert_eq!(regs.rip, 0x20_3000);
        assert!(cpu.interrupts, "a trap gate leaves IF alone");
    }

    #[test]
    fn int_to_a_kernel_only_gate_becomes_a_general_protection_fault() {
        let (mut m, map) = identity_guest(64, true);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, true);
        let mut cpu = setup(&mut mem);
        mem.write(IDT + 13 * 16, &gate(0x20_6000, 0, 0x0e, 0)).unwrap();
        (cpu.cpl, cpu.cs) = (3, 0x23);
        let mut regs = GuestRegs { rsp: 0x5000, ..Default::default() };
        deliver(&mut cpu, &mut regs, &mut mem, 0x81, EventKind::Software).unwrap();
        assert_eq!(regs.rip, 0x20_6000);
        assert_eq!(mem.read_u64(regs.rsp).unwrap(), 0x81 * 8 + 2);
    }

    #[test]
    fn what_would_triple_fault_is_an_error() {
        let (mut m, map) = identity_guest(64, false);
        let mut mem = GuestVirt::new(&mut m, GuestPhys::new(&map), 0x1000, true, false);
        let mut cpu = setup(&mut mem);
        let mut regs = GuestRegs { rsp: 0x1_0000, ..Default::default() };
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x30, EventKind::External), Err(InjectError::NoGate(0x30)));
        cpu.idtr.limit = 0x20 * 16;
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::NoGate(0x20)));
        cpu.idtr.limit = 0xfff;
        regs.rsp = 0x80_0000; // beyond RAM
        assert!(matches!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::Memory(_))));
        (cpu.cpl, cpu.tss_base) = (3, 0);
        assert_eq!(deliver(&mut cpu, &mut regs, &mut mem, 0x20, EventKind::External), Err(InjectError::NoTss(0x20)));
    }
}
