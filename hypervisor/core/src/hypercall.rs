//! The hypercall table: decode, validate, act.
//!
//! [`dispatch`] is called for every hypercall that leaves the entry path's
//! fast lane. It turns `rax` into a [`Hypercall`] (an unknown number is one
//! error, like NOVA's fixed table), checks the arguments, and either answers
//! (the result goes back in `rax`) or tells the [`System`](crate::system::System)
//! to yield or end the domain. Every argument check lives here or in
//! [`guest_memory`](crate::guest_memory), and each rejection has a test.

use crate::console::{drain_ring, ConsoleSink};
use crate::domain::{Domain, DomainId};
use crate::frame_table::FrameTable;
use crate::guest_memory::{GuestSlice, GuestView};
use crate::machine_memory::MachineMemory;
use crate::vcpu::GuestRegs;
use hypercall_abi::console::CONSOLE_WRITE_MAX;
use hypercall_abi::domain_info::DOMID_SELF;
use hypercall_abi::{DomainInfo, Hypercall, HypercallError, ABI_VERSION};
use zerocopy::{FromZeros, IntoBytes};

/// What the system must do after a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put this result in `rax` and return to the caller.
    Return(Result<u64, HypercallError>),
    /// Return 0 to the caller when it next runs; run someone else first.
    Yield,
    /// End the caller with this status.
    Exit(u64),
    /// Return 0 and switch the caller's `syscall` path to the bare floor
    /// path until its next exception (see [`Hypercall::BenchFloor`]).
    BenchFloor,
}

/// Everything a hypercall may look at besides the caller's registers.
pub struct Context<'a, M: MachineMemory, C: ConsoleSink> {
    /// Machine memory.
    pub mem: &'a mut M,
    /// Where console lines go.
    pub console: &'a mut C,
    /// Frame ownership.
    pub frames: &'a FrameTable,
    /// All domains (the caller included).
    pub domains: &'a mut [Domain],
    /// The caller.
    pub caller: DomainId,
}

impl<M: MachineMemory, C: ConsoleSink> Context<'_, M, C> {
    fn view(&mut self) -> GuestView<'_, M> {
        let root = self.domains[usize::from(self.caller.0)].root;
        GuestView { mem: self.mem, frames: self.frames, domain: self.caller, root }
    }
}

/// Decodes and performs the hypercall in `regs`.
pub fn dispatch<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, regs: &GuestRegs) -> Outcome {
    let call = match Hypercall::try_from(regs.rax) {
        Ok(call) => call,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let [a0, a1, ..] = regs.hypercall_args();
    match call {
        Hypercall::Null => Outcome::Return(Ok(0)),
        Hypercall::AbiVersion => Outcome::Return(Ok(u64::from(ABI_VERSION))),
        Hypercall::ConsoleWrite => Outcome::Return(console_write(ctx, GuestSlice::new(a0, a1))),
        Hypercall::DomainInfo => Outcome::Return(domain_info(ctx, a0, a1)),
        Hypercall::Yield => Outcome::Yield,
        Hypercall::Exit => Outcome::Exit(a0),
        Hypercall::BenchFloor => Outcome::BenchFloor,
    }
}

/// `console_write(buf, len)`: at most [`CONSOLE_WRITE_MAX`] bytes per call.
fn console_write<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, claim: GuestSlice) -> Result<u64, HypercallError> {
    let len = claim.len.min(CONSOLE_WRITE_MAX);
    let mut bytes = [0u8; CONSOLE_WRITE_MAX as usize];
    let buf = &mut bytes[..len as usize];
    ctx.view().read(GuestSlice { addr: claim.addr, len }, buf)?;
    let domain = &mut ctx.domains[usize::from(ctx.caller.0)];
    // What the guest put in its ring earlier comes out first.
    drain_ring(ctx.mem, domain.console_ring, &mut domain.console, &domain.name, ctx.console);
    domain.console.push(buf, &domain.name, ctx.console);
    Ok(len)
}

/// `domain_info(domain_id, out)`.
fn domain_info<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, id: u64, out: u64) -> Result<u64, HypercallError> {
    let id = if id == DOMID_SELF { u64::from(ctx.caller.0) } else { id };
    let nr_domains = ctx.domains.len() as u32;
    let target = usize::try_from(id).ok().and_then(|i| ctx.domains.get(i)).ok_or(HypercallError::NoSuchDomain)?;
    let mut info = DomainInfo::new_zeroed();
    info.domain_id = u32::from(target.id.0);
    info.state = target.state() as u32;
    info.nr_pages = target.frames.len() as u64;
    info.exit_status = match target.ending {
        Some(crate::domain::Ending::Exited(s)) => s,
        _ => 0,
    };
    info.nr_domains = nr_domains;
    let name = target.name.as_bytes();
    let n = name.len().min(info.name.len());
    info.name[..n].copy_from_slice(&name[..n]);
    info.name_len = n as u32;
    ctx.view().write(GuestSlice::new(out, core::mem::size_of::<DomainInfo>() as u64), info.as_bytes())?;
    Ok(0)
}

/// Prints what a domain left in its line buffer (on exit or crash).
pub fn flush_console(domain: &mut Domain, sink: &mut impl ConsoleSink) {
    domain.console.flush(&domain.name, sink);
}
