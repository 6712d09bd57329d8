//! `console_write` and `domain_info`.

use super::Context;
use crate::console::{drain_ring, ConsoleSink};
use crate::domain::Ending;
use crate::guest_memory::GuestSlice;
use crate::machine_memory::MachineMemory;
use hypercall_abi::console::CONSOLE_WRITE_MAX;
use hypercall_abi::domain_info::DOMID_SELF;
use hypercall_abi::{DomainInfo, HypercallError};
use zerocopy::{FromZeros, IntoBytes};

/// `console_write(buf, len)`: at most [`CONSOLE_WRITE_MAX`] bytes per call.
/// Not inlined: its 4 KiB buffer would otherwise cost every hypercall a stack probe.
#[inline(never)]
pub fn console_write<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, buf: u64, len: u64) -> Result<u64, HypercallError> {
    let len = len.min(CONSOLE_WRITE_MAX);
    let mut bytes = [0u8; CONSOLE_WRITE_MAX as usize];
    let bytes = &mut bytes[..len as usize];
    ctx.view().read(GuestSlice::new(buf, len), bytes)?;
    let domain = &mut ctx.domains[usize::from(ctx.caller.0)];
    // What the guest put in its ring earlier comes out first.
    drain_ring(ctx.mem, domain.console_ring, &mut domain.console, &domain.name, ctx.console);
    domain.console.push(bytes, &domain.name, ctx.console);
    Ok(len)
}

/// `domain_info(domain_id, out)`.
pub fn domain_info<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, id: u64, out: u64) -> Result<u64, HypercallError> {
    let id = if id == DOMID_SELF { u64::from(ctx.caller.0) } else { id };
    let nr_domains = ctx.domains.len() as u32;
    let target = usize::try_from(id).ok().and_then(|i| ctx.domains.get(i)).ok_or(HypercallError::NoSuchDomain)?;
    let mut info = DomainInfo::new_zeroed();
    info.domain_id = u32::from(target.id.0);
    info.state = target.state() as u32;
    info.nr_pages = target.frames.len() as u64;
    info.exit_status = match target.ending {
        Some(Ending::Exited(s)) => s,
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
