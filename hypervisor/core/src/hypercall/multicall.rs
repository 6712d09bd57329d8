//! `multicall`: several hypercalls for the price of one entry.

use super::{dispatch, Context, Outcome};
use crate::console::ConsoleSink;
use crate::guest_memory::GuestSlice;
use crate::machine_memory::MachineMemory;
use crate::vcpu::GuestRegs;
use hypercall_abi::mm::{MulticallEntry, MULTICALL_MAX};
use hypercall_abi::{encode_result, Hypercall, HypercallError};
use zerocopy::FromBytes;

/// `multicall(calls, count)`.
pub fn multicall<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, calls: u64, count: u64) -> Result<u64, HypercallError> {
    if count > MULTICALL_MAX {
        return Err(HypercallError::BadArgument);
    }
    let size = core::mem::size_of::<MulticallEntry>() as u64;
    for i in 0..count {
        let at = calls.checked_add(i * size).ok_or(HypercallError::BadAddress)?;
        let mut bytes = [0u8; core::mem::size_of::<MulticallEntry>()];
        ctx.view().read(GuestSlice::new(at, size), &mut bytes)?;
        let entry = MulticallEntry::read_from_bytes(&bytes).expect("sizes match");
        let result = match Hypercall::try_from(entry.op) {
            // Calls that leave the caller or change its registers cannot be batched.
            Ok(
                Hypercall::Multicall
                | Hypercall::Yield
                | Hypercall::Exit
                | Hypercall::Iret
                | Hypercall::BenchFloor
                | Hypercall::SchedOp,
            ) => {
                Err(HypercallError::BadArgument)
            }
            _ => {
                let [rdi, rsi, rdx, r10, r8, r9] = entry.args;
                let mut regs = GuestRegs { rax: entry.op, rdi, rsi, rdx, r10, r8, r9, ..GuestRegs::default() };
                match dispatch(ctx, &mut regs) {
                    Outcome::Return(r) => r,
                    _ => unreachable!("the calls that do not simply return were refused above"),
                }
            }
        };
        let result_at = at + core::mem::offset_of!(MulticallEntry, result) as u64;
        ctx.view().write(GuestSlice::new(result_at, 8), &encode_result(result).to_le_bytes())?;
    }
    Ok(count)
}
