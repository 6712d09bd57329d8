//! Event channels, blocking and timers: `event_channel_op`, `sched_op`,
//! `set_timer`.

use super::{Context, Outcome};
use crate::console::ConsoleSink;
use crate::domain::DomainId;
use crate::event_channel::{self, PollPorts, Port, Wait};
use crate::guest_memory::GuestSlice;
use crate::machine_memory::MachineMemory;
use hypercall_abi::event::{virq, EventChannelCmd, SchedCmd, POLL_MAX, UPCALL_MASK_OFFSET, UPCALL_PENDING_OFFSET};
use hypercall_abi::HypercallError;
use zerocopy::IntoBytes;

/// The domain with id `id`, alive (`NoSuchDomain` otherwise).
fn live_domain<M: MachineMemory, C: ConsoleSink>(ctx: &Context<'_, M, C>, id: u64) -> Result<DomainId, HypercallError> {
    let d = usize::try_from(id).ok().and_then(|i| ctx.domains.get(i)).ok_or(HypercallError::NoSuchDomain)?;
    if !d.is_alive() {
        return Err(HypercallError::NoSuchDomain);
    }
    Ok(d.id)
}

/// Raises `port` of domain `id` and notes a wake-up if it needs one.
pub(crate) fn raise_on<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, id: DomainId, port: u32) {
    let d = &mut ctx.domains[usize::from(id.0)];
    if event_channel::raise(ctx.mem, d.shared_info, &mut d.events, port) {
        d.events.wake_port = Some(port);
        ctx.woke = true;
    }
}

/// `event_channel_op(cmd, a, b)`.
pub fn event_channel_op<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, cmd: u64, a: u64, b: u64) -> Result<u64, HypercallError> {
    let caller = ctx.caller;
    match EventChannelCmd::from_raw(cmd).ok_or(HypercallError::BadArgument)? {
        EventChannelCmd::AllocUnbound => {
            let remote = live_domain(ctx, a)?;
            ctx.caller().alloc_port(Port::Unbound { remote }).map(u64::from)
        }
        EventChannelCmd::BindInterdomain => {
            let remote = live_domain(ctx, a)?;
            let remote_port = u32::try_from(b).map_err(|_| HypercallError::NoSuchPort)?;
            match ctx.domains[usize::from(remote.0)].events.get(b)? {
                Port::Unbound { remote: allowed } if allowed == caller => {}
                Port::Unbound { .. } => return Err(HypercallError::PermissionDenied),
                _ => return Err(HypercallError::WrongPortState),
            }
            let local = ctx.caller().alloc_port(Port::Interdomain { remote, remote_port })?;
            ctx.domains[usize::from(remote.0)].events.set(remote_port, Port::Interdomain { remote: caller, remote_port: local });
            Ok(u64::from(local))
        }
        EventChannelCmd::BindVirq => {
            if a >= virq::COUNT {
                return Err(HypercallError::BadArgument);
            }
            if ctx.caller().events.virq_port(a).is_some() {
                return Err(HypercallError::PortInUse);
            }
            ctx.caller().alloc_port(Port::Virq(a)).map(u64::from)
        }
        EventChannelCmd::Send => match ctx.caller().events.get(a)? {
            Port::Interdomain { remote, remote_port } => {
                raise_on(ctx, remote, remote_port);
                Ok(0)
            }
            Port::Virq(_) => {
                raise_on(ctx, caller, a as u32);
                Ok(0)
            }
            Port::Unbound { .. } | Port::Free => Err(HypercallError::WrongPortState),
        },
        EventChannelCmd::Close => {
            let port = ctx.caller().events.get(a)?;
            if let Port::Interdomain { remote, remote_port } = port {
                ctx.domains[usize::from(remote.0)].events.set(remote_port, Port::Unbound { remote: caller });
            }
            ctx.caller().events.set(a as u32, Port::Free);
            // A port number is reused by the next allocation: it must not
            // come back pending (or masked) from its previous life.
            let shared = ctx.caller().shared_info;
            event_channel::clear(ctx.mem, shared, a as u32);
            Ok(0)
        }
        EventChannelCmd::Status => {
            let status = ctx.caller().events.status(a)?;
            ctx.view().write(GuestSlice::new(b, status.as_bytes().len() as u64), status.as_bytes())?;
            Ok(0)
        }
        EventChannelCmd::Unmask => {
            ctx.caller().events.get(a)?;
            let d = &mut ctx.domains[usize::from(caller.0)];
            event_channel::unmask(ctx.mem, d.shared_info, &mut d.events, a as u32);
            Ok(0)
        }
    }
}

/// `sched_op(cmd, a, b, c)`.
pub fn sched_op<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, cmd: u64, a: u64, b: u64, c: u64) -> Outcome {
    let cmd = match SchedCmd::from_raw(cmd) {
        Some(cmd) => cmd,
        None => return Outcome::Return(Err(HypercallError::BadArgument)),
    };
    match cmd {
        SchedCmd::CheckEvents => {
            ctx.caller().events.upcall_due = true;
            Outcome::Return(Ok(0))
        }
        SchedCmd::Block => {
            let shared = ctx.caller().shared_info;
            ctx.mem.write(shared + UPCALL_MASK_OFFSET as u64, &[0]);
            let mut pending = [0u8];
            ctx.mem.read(shared + UPCALL_PENDING_OFFSET as u64, &mut pending);
            if pending[0] != 0 {
                ctx.caller().events.upcall_due = true;
                return Outcome::Return(Ok(0));
            }
            ctx.caller().events.wait = Wait::Block;
            Outcome::Block
        }
        SchedCmd::Poll => match poll(ctx, a, b, c) {
            Ok(Some(port)) => Outcome::Return(Ok(u64::from(port))),
            Ok(None) => Outcome::Block,
            Err(e) => Outcome::Return(Err(e)),
        },
    }
}

/// `Poll`: the first pending port now, or `None` after setting up the wait.
fn poll<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, at: u64, count: u64, deadline: u64) -> Result<Option<u32>, HypercallError> {
    if count == 0 || count > POLL_MAX {
        return Err(HypercallError::BadArgument);
    }
    let mut bytes = [0u8; (POLL_MAX * 4) as usize];
    let bytes = &mut bytes[..(count * 4) as usize];
    ctx.view().read(GuestSlice::new(at, count * 4), bytes)?;
    let ports: PollPorts = bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let now = ctx.now_ns();
    let d = &mut ctx.domains[usize::from(ctx.caller.0)];
    for &port in &ports {
        d.events.get(u64::from(port))?;
    }
    if let Some(&port) = ports.iter().find(|p| event_channel::is_pending(&*ctx.mem, d.shared_info, **p)) {
        return Ok(Some(port));
    }
    if deadline != 0 && deadline <= now {
        return Err(HypercallError::TimedOut);
    }
    d.events.wait = Wait::Poll { ports, deadline_ns: (deadline != 0).then_some(deadline) };
    ctx.timer_changed = true;
    Ok(None)
}

/// `set_timer(deadline)`.
pub fn set_timer<M: MachineMemory, C: ConsoleSink>(ctx: &mut Context<'_, M, C>, deadline: u64) -> Result<u64, HypercallError> {
    let caller = ctx.caller;
    ctx.timer_changed = true;
    if deadline == 0 {
        ctx.caller().events.timer_deadline_ns = None;
    } else if deadline <= ctx.now_ns() {
        ctx.caller().events.timer_deadline_ns = None;
        if let Some(port) = ctx.caller().events.virq_port(virq::TIMER) {
            raise_on(ctx, caller, port);
        }
    } else {
        ctx.caller().events.timer_deadline_ns = Some(deadline);
    }
    Ok(0)
}
