//! Finding (or installing) QEMU, its command line, and running it with a
//! timeout.
//!
//! The machine is QEMU's `microvm` (no PCI, no firmware tables to parse;
//! the hypervisor, or the boot shim of a native run, boots through the PVH
//! note of `-kernel`). The serial port is the console; `isa-debug-exit`
//! lets the hypervisor (or a native kernel) end QEMU with a status: it
//! writes `v` and QEMU exits with `(v << 1) | 1`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parvus_core::manifest::MemorySize;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The Debian package that has it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// QEMU's status when the hypervisor reports that every domain ended as
/// expected (debug-exit value 0).
pub const STATUS_ALL_AS_EXPECTED: i32 = 1;

/// What a QEMU exit status means for a native run (a bare-metal kernel
/// under the boot shim, which exits with 3 when it cannot boot it).
pub fn describe_native_status(status: Option<i32>) -> String {
    match status {
        None => "QEMU was killed by a signal".to_string(),
        Some(0) => "QEMU exited 0: a triple fault or a reset, not a clean kernel exit".to_string(),
        Some(7) => "exit 3: the boot shim could not start the kernel, or the kernel refused its BootInfo".to_string(),
        Some(s) if s % 2 == 1 => format!("the kernel exited {}", s >> 1),
        Some(s) => format!("QEMU failed with status {s}"),
    }
}

/// What a QEMU exit status means for Parvus.
pub fn describe_status(status: Option<i32>) -> String {
    match status {
        None => "QEMU was killed by a signal".to_string(),
        Some(0) => "QEMU exited 0: a triple fault or a reset, not a clean hypervisor exit".to_string(),
        Some(1) => "every domain ended as expected (hypervisor exit 0)".to_string(),
        Some(3) => "some domains did not end as expected (hypervisor exit 1)".to_string(),
        Some(5) => "the hypervisor panicked or faulted (hypervisor exit 2)".to_string(),
        Some(s) if s % 2 == 1 => format!("hypervisor exit {}", s >> 1),
        Some(s) => format!("QEMU failed with status {s}"),
    }
}

/// Searches `PATH` for an executable.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// Whether this process runs as root (uid 0), read from /proc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uid_line = status.lines().find(|l| l.starts_with("Uid:"))?;
            uid_line.split_whitespace().nth(1).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// The command that installs QEMU on Debian.
pub fn install_command(as_root: bool) -> String {
    let sudo = if as_root { "" } else { "sudo " };
    format!("{sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {QEMU_PACKAGE}")
}

/// Makes sure QEMU is there: installs Debian's package when we are root and
/// have apt-get, otherwise fails with the one command to run.
pub fn ensure_installed() -> Result<()> {
    if which(QEMU).is_some() {
        return Ok(());
    }
    if !(is_root() && which("apt-get").is_some()) {
        bail!("{QEMU} is not installed; install it with: {}", install_command(false));
    }
    let command = install_command(true);
    eprintln!("xtask: {QEMU} is not installed; running: {command}");
    let status = Command::new("sh")
        .args(["-c", &command])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() || which(QEMU).is_none() {
        bail!("installing {QEMU_PACKAGE} failed ({status}); try: {command}");
    }
    Ok(())
}

/// One QEMU boot of Parvus (or of a native kernel).
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The hypervisor ELF, or the boot shim (`-kernel`).
    pub kernel: PathBuf,
    /// The boot bundle, or the native kernel's ELF (`-initrd`).
    pub initrd: PathBuf,
    /// Machine memory (`-m`).
    pub memory: MemorySize,
    /// The command line (`-append`), if any.
    pub append: Option<String>,
    /// Count instructions (`-icount shift=0,align=off,sleep=off`): RDTSC and
    /// every timer then follow executed instructions, which makes runs
    /// deterministic (run and test) and figures exact (bench).
    pub icount: bool,
    /// Wait for gdb on port 1234 (`-s -S`).
    pub gdb: bool,
    /// Appended as they are.
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "-machine",
            "microvm",
            "-cpu",
            "max",
            "-m",
            &format!("{}M", self.memory.bytes() >> 20),
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        args.push("-initrd".into());
        args.push(self.initrd.clone().into_os_string());
        if let Some(append) = &self.append {
            args.push("-append".into());
            args.push(append.into());
        }
        if self.icount {
            args.extend(["-icount", "shift=0,align=off,sleep=off"].map(OsString::from));
        }
        if self.gdb {
            args.extend(["-s", "-S"].map(OsString::from));
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// The command to spawn.
    pub fn command(&self) -> Command {
        let mut command = Command::new(QEMU);
        command.args(self.args());
        command
    }

    /// The command line, for logs, as a shell would take it (an argument
    /// with spaces or quotes, such as `-append op=fork n=200`, is quoted).
    pub fn shell_line(&self) -> String {
        std::iter::once(OsString::from(QEMU))
            .chain(self.args())
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `arg` as one shell word: as it is when it has only characters no shell
/// treats specially, else in single quotes.
pub fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=,./:+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The outcome of a captured QEMU run.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Everything on the serial port (QEMU's stdout), `\r` removed.
    pub serial: String,
    /// QEMU's own messages (stderr).
    pub stderr: String,
    /// The exit status, `None` if killed.
    pub status: Option<i32>,
    /// Whether it was killed at the timeout.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Kills the child when dropped, so no QEMU outlives an early return or a
/// panic of the runner.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads `stream` to its end, handing every chunk to `sink`.
fn pump(mut stream: impl Read, mut sink: impl FnMut(&[u8])) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        sink(&buffer[..n]);
    }
}

/// How a spawned QEMU ended.
struct Ended {
    status: Option<ExitStatus>,
    timed_out: bool,
    elapsed: Duration,
}

/// Spawns QEMU (no standard input: nothing reads the serial port, and a
/// QEMU that owned the terminal would leave it without echo when killed),
/// feeds its stdout and stderr to the two sinks as they arrive, and kills
/// it after `timeout` (never, when `None`).
fn spawn_and_wait(
    config: &QemuConfig,
    timeout: Option<Duration>,
    stdout: impl FnMut(&[u8]) + Send,
    stderr: impl FnMut(&[u8]) + Send,
) -> Result<Ended> {
    let mut command = config.command();
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = KillOnDrop(command.spawn().with_context(|| format!("cannot start {QEMU}"))?);
    let out = child.0.stdout.take().expect("piped stdout");
    let err = child.0.stderr.take().expect("piped stderr");
    std::thread::scope(|scope| {
        scope.spawn(|| pump(out, stdout));
        scope.spawn(|| pump(err, stderr));
        let mut timed_out = false;
        let status = loop {
            match child.0.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => {
                    // Killed here, not on drop: the readers end only when
                    // QEMU's pipes close, and the scope waits for them.
                    let _ = child.0.kill();
                    let _ = child.0.wait();
                    return Err(anyhow::Error::new(e).context(format!("cannot wait for {QEMU}")));
                }
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                timed_out = true;
                let _ = child.0.kill();
                break child.0.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Ended { status, timed_out, elapsed: start.elapsed() })
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

/// Runs QEMU with the serial output captured; kills it after `timeout`.
pub fn run_captured(config: &QemuConfig, timeout: Duration) -> Result<Captured> {
    let serial = Mutex::new(Vec::new());
    let stderr = Mutex::new(Vec::new());
    let ended = spawn_and_wait(
        config,
        Some(timeout),
        |bytes| serial.lock().expect("serial buffer").extend_from_slice(bytes),
        |bytes| stderr.lock().expect("stderr buffer").extend_from_slice(bytes),
    )?;
    Ok(Captured {
        serial: text(&serial.into_inner().expect("serial buffer")),
        stderr: text(&stderr.into_inner().expect("stderr buffer")),
        status: if ended.timed_out { None } else { ended.status.and_then(|s| s.code()) },
        timed_out: ended.timed_out,
        elapsed: ended.elapsed,
    })
}

/// The outcome of a QEMU run on the terminal ([`run_on_terminal`]).
#[derive(Clone, Debug)]
pub struct OnTerminal {
    /// The exit status, `None` if killed.
    pub status: Option<i32>,
    /// Whether it was killed at the timeout.
    pub timed_out: bool,
    /// What QEMU wrote to stderr while the serial port was still silent,
    /// when it stayed silent to the end: kept back, because it is why QEMU
    /// did not start (an unknown option, memory it cannot allocate), for
    /// the caller to say in one line. Empty once the machine printed
    /// anything: then QEMU's messages went to the terminal as they came.
    pub unstarted_stderr: String,
}

/// QEMU's stderr while the machine has printed nothing yet: held back
/// (see [`OnTerminal::unstarted_stderr`]) until the first serial byte.
#[derive(Default)]
struct StderrGate {
    started: bool,
    held: Vec<u8>,
}

/// Runs QEMU with its serial output on this terminal, as it comes, and
/// hands every serial line (without `\r` and `\n`) to `on_line`; kills
/// it after `timeout` (never, when `None`).
pub fn run_on_terminal(
    config: &QemuConfig,
    timeout: Option<Duration>,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<OnTerminal> {
    let gate = Mutex::new(StderrGate::default());
    let mut partial: Vec<u8> = Vec::new();
    let ended = spawn_and_wait(
        config,
        timeout,
        |bytes| {
            {
                let mut gate = gate.lock().expect("stderr gate");
                if !gate.started {
                    gate.started = true;
                    let _ = std::io::stderr().write_all(&gate.held);
                    gate.held.clear();
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
            partial.extend_from_slice(bytes);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                on_line(text(&line).trim_end_matches('\n'));
            }
        },
        |bytes| {
            let mut gate = gate.lock().expect("stderr gate");
            if gate.started {
                let _ = std::io::stderr().write_all(bytes);
            } else {
                gate.held.extend_from_slice(bytes);
            }
        },
    )?;
    if !partial.is_empty() {
        on_line(&text(&partial));
    }
    let gate = gate.into_inner().expect("stderr gate");
    Ok(OnTerminal {
        status: if ended.timed_out { None } else { ended.status.and_then(|s| s.code()) },
        timed_out: ended.timed_out,
        unstarted_stderr: text(&gate.held),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            kernel: "target/parvus".into(),
            initrd: "target/b.tar".into(),
            memory: MemorySize(128 << 20),
            append: None,
            icount: false,
            gdb: false,
            extra_args: vec![],
        }
    }

    #[test]
    fn command_line() {
        assert_eq!(
            config().shell_line(),
            "qemu-system-x86_64 -machine microvm -cpu max -m 128M -nodefaults -no-reboot -display none \
             -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel target/parvus -initrd target/b.tar"
        );
        let mut c = config();
        c.icount = true;
        c.gdb = true;
        c.extra_args = vec!["-d".into(), "int".into()];
        assert!(c.shell_line().ends_with("-icount shift=0,align=off,sleep=off -s -S -d int"));
        c.append = Some("op=fork n=200".into());
        assert!(c.shell_line().contains(" -append 'op=fork n=200' "), "{}", c.shell_line());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("isa-debug-exit,iobase=0xf4"), "isa-debug-exit,iobase=0xf4");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn statuses() {
        assert!(describe_status(Some(0)).contains("triple fault"));
        assert!(describe_status(Some(1)).contains("every domain ended as expected"));
        assert!(describe_status(Some(3)).contains("did not end as expected"));
        assert!(describe_status(Some(5)).contains("panicked"));
        assert_eq!(describe_status(Some(7)), "hypervisor exit 3");
        assert!(describe_status(None).contains("signal"));
        assert_eq!(describe_native_status(Some(1)), "the kernel exited 0");
        assert_eq!(describe_native_status(Some(5)), "the kernel exited 2");
        assert!(describe_native_status(Some(7)).contains("boot shim"));
        assert!(describe_native_status(Some(0)).contains("triple fault"));
    }

    #[test]
    fn install_hint() {
        assert_eq!(
            install_command(false),
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends qemu-system-x86"
        );
        assert_eq!(
            install_command(true),
            "apt-get update && apt-get install -y --no-install-recommends qemu-system-x86"
        );
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("surely-not-a-program-xyz").is_none());
    }
}
