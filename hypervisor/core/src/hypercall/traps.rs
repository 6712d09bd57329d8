//! Ring compression from the guest kernel's side: registering where traps
//! go, and `iret` back to user (or kernel) mode. Delivery itself is in
//! [`trap_bounce`](crate::trap_bounce).

use super::{is_guest_address, Context};
use crate::console::ConsoleSink;
use crate::guest_memory::GuestSlice;
use crate::trap_bounce::read_trap_frame;
use crate::machine_memory::MachineMemory;
use crate::domain::DomainId;
use crate::frame_table::FrameTable;
use crate::vcpu::{GuestRegs, Vcpu, GUEST_RFLAGS_MASK, TRAP_VECTORS};
use hypercall_abi::trap::{frame_flags, TrapInfo};
use hypercall_abi::HypercallError;
use zerocopy::FromBytes;

/// `set_trap_table(table, count)`.
pub fn set_trap_table<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, table: u64, count: u64) -> Result<u64, HypercallError> {
    if count > TRAP_VECTORS as u64 {
        return Err(HypercallError::BadArgument);
    }
    let size = core::mem::size_of::<TrapInfo>();
    let mut bytes = [0u8; TRAP_VECTORS * core::mem::size_of::<TrapInfo>()];
    let bytes = &mut bytes[..count as usize * size];
    ctx.view().read(GuestSlice::new(table, bytes.len() as u64), bytes)?;
    let mut traps = [0u64; TRAP_VECTORS];
    for chunk in bytes.chunks_exact(size) {
        let info = TrapInfo::read_from_bytes(chunk).expect("sizes match");
        if info.vector >= TRAP_VECTORS as u64 || !is_guest_address(info.handler) {
            return Err(HypercallError::BadArgument);
        }
        traps[info.vector as usize] = info.handler;
    }
    ctx.caller().vcpu.traps = traps;
    Ok(0)
}

/// `set_callbacks(syscall, event)`.
pub fn set_callbacks<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, syscall: u64, event: u64) -> Result<u64, HypercallError> {
    if !is_guest_address(syscall) || !is_guest_address(event) {
        return Err(HypercallError::BadArgument);
    }
    let vcpu = &mut ctx.caller().vcpu;
    vcpu.syscall_callback = syscall;
    vcpu.event_callback = event;
    Ok(0)
}

/// `stack_switch(kernel_sp)`.
pub fn stack_switch<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, sp: u64) -> Result<u64, HypercallError> {
    if !is_guest_address(sp) {
        return Err(HypercallError::BadArgument);
    }
    ctx.caller().vcpu.kernel_sp = sp;
    Ok(0)
}

/// `iret()`: pops the [`TrapFrame`](hypercall_abi::trap::TrapFrame) at the caller's `rsp` into its registers.
pub fn iret<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, regs: &mut GuestRegs) -> Result<(), HypercallError> {
    let caller = ctx.caller;
    pop_trap_frame(ctx.mem, ctx.frames, caller, &mut ctx.domains[usize::from(caller.0)].vcpu, regs)
}

/// The work of [`iret`], on the vCPU of `domain` (whose registers are in
/// `regs`). [`System::on_hypercall`](crate::system::System::on_hypercall)
/// calls it directly: `iret` ends every trap a guest kernel handles and
/// needs nothing but the caller's vCPU and stack, so it skips the table.
#[inline]
pub fn pop_trap_frame(
    mem: &mut impl MachineMemory,
    frames: &FrameTable,
    domain: DomainId,
    vcpu: &mut Vcpu,
    regs: &mut GuestRegs,
) -> Result<(), HypercallError> {
    let frame = read_trap_frame(mem, frames, domain, vcpu, regs.rsp)?;
    if !is_guest_address(frame.rip) || !is_guest_address(frame.rsp) || frame.flags & !frame_flags::FROM_USER != 0 {
        return Err(HypercallError::BadArgument);
    }
    let to_user = frame.flags & frame_flags::FROM_USER != 0;
    if to_user && vcpu.user_root.is_none() {
        return Err(HypercallError::BadArgument);
    }
    regs.rax = frame.rax;
    regs.r11 = frame.r11;
    regs.rcx = frame.rcx;
    regs.rip = frame.rip;
    regs.rsp = frame.rsp;
    // IOPL stays 0 and interrupts stay on, whatever the frame says.
    regs.rflags = (frame.rflags & GUEST_RFLAGS_MASK) | 0x202;
    vcpu.kernel_mode = !to_user;
    Ok(())
}
