//! Host tests of the store emulator: each form from its bytes, against a
//! mock guest memory; the string instructions also against a reference
//! that runs them one element at a time, as the manual describes.

use super::alu::{AF, CF, OF, PF, SF, ZF};
use super::*;
use crate::decode::decode;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use hypercall_abi::PAGE_SIZE;
use proptest::prelude::*;

/// A #PF the mock reports: address and error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fault {
    va: u64,
    error_code: u64,
}

/// Guest memory: some pages mapped, some of them read-only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Mock {
    pages: BTreeMap<u64, Vec<u8>>,
    read_only: BTreeSet<u64>,
    /// Write calls: (address, length).
    writes: Vec<(u64, usize)>,
}

impl Mock {
    fn with_pages(pages: impl IntoIterator<Item = u64>) -> Self {
        let mut m = Mock::default();
        for p in pages {
            m.pages.insert(p, alloc::vec![0; PAGE_SIZE as usize]);
        }
        m
    }

    fn byte(&self, va: u64) -> u8 {
        self.pages[&(va / PAGE_SIZE)][(va % PAGE_SIZE) as usize]
    }

    fn bytes(&self, va: u64, n: usize) -> Vec<u8> {
        (0..n as u64).map(|i| self.byte(va + i)).collect()
    }

    fn u64_at(&self, va: u64) -> u64 {
        u64::from_le_bytes(self.bytes(va, 8).try_into().unwrap())
    }

    fn fill(&mut self, va: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = va + i as u64;
            self.pages.get_mut(&(a / PAGE_SIZE)).unwrap()[(a % PAGE_SIZE) as usize] = *b;
        }
    }

    /// The first fault of an access to `va..va + len`.
    fn check(&self, va: u64, len: usize, write: bool) -> Result<(), Fault> {
        let last = va + len as u64 - 1;
        let pages = last / PAGE_SIZE - va / PAGE_SIZE + 1;
        assert!(pages == 1 || (pages == 2 && len <= 16), "only a single element may straddle two pages");
        for page in va / PAGE_SIZE..=last / PAGE_SIZE {
            let at = va.max(page * PAGE_SIZE);
            if !self.pages.contains_key(&page) {
                return Err(Fault { va: at, error_code: if write { 2 } else { 0 } });
            }
            if write && self.read_only.contains(&page) {
                return Err(Fault { va: at, error_code: 3 });
            }
        }
        Ok(())
    }
}

impl GuestMemoryAccess for Mock {
    type Error = Fault;
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.check(va, buf.len(), false)?;
        buf.copy_from_slice(&self.bytes(va, buf.len()));
        Ok(())
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), Fault> {
        self.check(va, data.len(), true)?;
        self.fill(va, data);
        self.writes.push((va, data.len()));
        Ok(())
    }
}

const RIP: u64 = 0x40_1000;
const PAGE: u64 = 0x10; // the page the tests write, at 0x10000
const BASE: u64 = PAGE * PAGE_SIZE;

fn regs() -> GuestRegs {
    GuestRegs { rip: RIP, rflags: 0x202, ..GuestRegs::default() }
}

/// Decodes `bytes` and emulates it.
fn run(bytes: &[u8], r: &mut GuestRegs, m: &mut Mock) -> Result<(), StoreError<Fault>> {
    run_with(bytes, r, &FpuState::initial(), SegmentBases::default(), m)
}

fn run_with(
    bytes: &[u8],
    r: &mut GuestRegs,
    fpu: &FpuState,
    seg: SegmentBases,
    m: &mut Mock,
) -> Result<(), StoreError<Fault>> {
    let insn = decode(bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
    emulate_store(&insn, r, fpu, seg, m)
}

#[test]
fn mov_stores_every_size_and_advances_rip() {
    let mut m = Mock::with_pages([PAGE, PAGE + 1]);
    let mut r = regs();
    r.rdi = BASE;
    r.rcx = 2;
    r.rdx = 0x1122_3344_5566_7788;
    run(&[0x48, 0x89, 0x14, 0xcf], &mut r, &mut m).unwrap(); // mov [rdi+rcx*8], rdx
    assert_eq!(m.u64_at(BASE + 16), 0x1122_3344_5566_7788);
    assert_eq!(r.rip, RIP + 4);
    r.rbx = BASE;
    r.r9 = 0xdead_beef_cafe_f00d;
    run(&[0x44, 0x89, 0x0b], &mut r, &mut m).unwrap(); // mov [rbx], r9d
    assert_eq!(m.u64_at(BASE), 0xcafe_f00d, "four bytes only");
    r.rax = 0xabcd;
    run(&[0x66, 0x89, 0x03], &mut r, &mut m).unwrap(); // mov [rbx], ax
    assert_eq!(m.u64_at(BASE), 0xcafe_abcd);
    r.rax = 0x1234;
    r.rdi = BASE + 0x100 - 8;
    run(&[0x88, 0x67, 0x08], &mut r, &mut m).unwrap(); // mov [rdi+8], ah
    assert_eq!(m.byte(BASE + 0x100), 0x12);
    // Immediates are sign-extended to the operand size.
    r.rax = BASE + 0x200;
    run(&[0x48, 0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff], &mut r, &mut m).unwrap();
    assert_eq!(m.u64_at(BASE + 0x200), u64::MAX - 1);
    run(&[0x66, 0xc7, 0x40, 0x04, 0x34, 0x12], &mut r, &mut m).unwrap();
    assert_eq!(m.u64_at(BASE + 0x200), 0xffff_1234_ffff_fffe);
    // RIP-relative: from the end of the instruction, immediate included.
    let mut r = GuestRegs { rip: BASE + 0x300, ..regs() };
    run(&[0xc6, 0x05, 0x10, 0, 0, 0, 0x7f], &mut r, &mut m).unwrap();
    assert_eq!(m.byte(BASE + 0x300 + 7 + 0x10), 0x7f);
    // Segment base, and a store that straddles two pages.
    let mut r = regs();
    let seg = SegmentBases { fs: 0, gs: BASE + PAGE_SIZE - 2 - 0x10 };
    let mov_gs = [0x65, 0xc7, 0x04, 0x25, 0x10, 0, 0, 0, 0x05, 0x04, 0x03, 0x02];
    run_with(&mov_gs, &mut r, &FpuState::initial(), seg, &mut m).unwrap();
    assert_eq!(m.bytes(BASE + PAGE_SIZE - 2, 4), [5, 4, 3, 2]);
    assert_eq!(m.writes.last(), Some(&(BASE + PAGE_SIZE - 2, 4)), "one access");
}

#[test]
fn a_fault_writes_nothing_and_leaves_rip() {
    let mut m = Mock::with_pages([PAGE]);
    m.read_only.insert(PAGE);
    let mut r = regs();
    r.rdi = BASE + 8;
    r.rax = 7;
    let f = run(&[0x48, 0x89, 0x07], &mut r, &mut m);
    assert_eq!(f, Err(StoreError::Memory(Fault { va: BASE + 8, error_code: 3 })));
    assert_eq!((r.rip, m.u64_at(BASE + 8)), (RIP, 0));
    // Straddling into an unmapped page: the whole store is refused.
    m.read_only.clear();
    r.rdi = BASE + PAGE_SIZE - 4;
    let f = run(&[0x48, 0x89, 0x07], &mut r, &mut m);
    assert_eq!(f, Err(StoreError::Memory(Fault { va: BASE + PAGE_SIZE, error_code: 2 })));
    assert_eq!(m.bytes(BASE + PAGE_SIZE - 4, 4), [0; 4]);
    let not_a_store = decode(&[0x0f, 0x01, 0x10]).unwrap(); // lgdt
    let mut m = Mock::default();
    assert_eq!(
        emulate_store(&not_a_store, &mut r, &FpuState::initial(), SegmentBases::default(), &mut m),
        Err(StoreError::NotAStore)
    );
}

/// Runs `bytes` (an ALU op on [rdi] with rsi or an immediate) with memory
/// holding `a` and rsi = `b`; returns the memory value and the status flags.
fn alu_case(bytes: &[u8], a: u64, b: u64) -> (u64, u64) {
    let mut m = Mock::with_pages([PAGE]);
    m.fill(BASE, &a.to_le_bytes());
    let mut r = regs();
    r.rdi = BASE;
    r.rsi = b;
    r.rflags = 0x202 | 0x400 | STATUS_ALL; // IF, DF and every status flag set
    run(bytes, &mut r, &mut m).unwrap();
    assert_eq!(r.rflags & !STATUS_ALL, 0x602, "only the status flags change");
    (m.u64_at(BASE), r.rflags & STATUS_ALL)
}

const STATUS_ALL: u64 = CF | PF | AF | ZF | SF | OF;

#[test]
fn read_modify_write_results_and_flags() {
    // add byte [rdi], 0x80 on 0x80: wraps to zero, carry, overflow.
    assert_eq!(alu_case(&[0x80, 0x07, 0x80], 0x80, 0), (0, CF | ZF | OF | PF));
    // add qword [rdi], rsi: 0x7fff...ff + 1 overflows into the sign.
    let add64 = [0x48, 0x01, 0x37];
    assert_eq!(alu_case(&add64, i64::MAX as u64, 1), (1 << 63, SF | OF | AF | PF));
    assert_eq!(alu_case(&add64, 0x0f, 0x01), (0x10, AF), "carry out of bit 3; 0x10 has odd parity");
    // sub dword [rdi], esi: borrow; the upper half of memory is untouched.
    let sub32 = [0x29, 0x37];
    assert_eq!(alu_case(&sub32, 0xaaaa_aaaa_0000_0001, 2), (0xaaaa_aaaa_ffff_ffff, CF | SF | AF | PF));
    assert_eq!(alu_case(&sub32, 5, 5), (0, ZF | PF));
    assert_eq!(alu_case(&sub32, 0x8000_0000, 1), (0x7fff_ffff, OF | AF | PF), "signed overflow");
    // sub word [rdi], 0x100.
    assert_eq!(alu_case(&[0x66, 0x81, 0x2f, 0x00, 0x01], 0x0100, 0), (0, ZF | PF));
    // Logic: CF and OF cleared, AF cleared, SF/ZF/PF from the result.
    let or64 = [0xf0, 0x48, 0x09, 0x37]; // lock or [rdi], rsi
    assert_eq!(alu_case(&or64, 0x1000, 0x8000_0000_0000_0003), (0x8000_0000_0000_1003, SF | PF));
    let and_imm8 = [0xf0, 0x48, 0x83, 0x27, 0x80]; // lock and qword [rdi], -0x80
    assert_eq!(alu_case(&and_imm8, 0x1234_5678_9abc_def0, 0), (0x1234_5678_9abc_de80, 0));
    assert_eq!(alu_case(&[0x48, 0x31, 0x37], 0x55, 0x55), (0, ZF | PF), "xor [rdi], rsi");
    assert_eq!(alu_case(&[0x80, 0x37, 0x01], 0x03, 0), (0x02, 0), "xor byte [rdi], 1: odd parity");
}

#[test]
fn xchg_swaps_with_partial_registers() {
    let mut m = Mock::with_pages([PAGE]);
    m.fill(BASE, &0x1111_2222_3333_4444u64.to_le_bytes());
    let mut r = regs();
    r.rdi = BASE;
    r.rax = 0xaaaa_bbbb_cccc_dddd;
    run(&[0x87, 0x07], &mut r, &mut m).unwrap(); // xchg [rdi], eax
    assert_eq!(r.rax, 0x3333_4444, "a 32-bit register write clears the upper half");
    assert_eq!(m.u64_at(BASE), 0x1111_2222_cccc_dddd);
    r.rsi = BASE;
    r.rbx = 0xffff_ffff_ffff_ff77;
    run(&[0x86, 0x1e], &mut r, &mut m).unwrap(); // xchg [rsi], bl
    assert_eq!((r.rbx, m.byte(BASE)), (0xffff_ffff_ffff_ffdd, 0x77), "a byte write keeps the rest");
    r.rcx = 0x1234_5678;
    run(&[0x86, 0x2e], &mut r, &mut m).unwrap(); // xchg [rsi], ch
    assert_eq!((r.rcx, m.byte(BASE)), (0x1234_7778, 0x56));
    assert_eq!(r.rflags, 0x202, "no flags");
}

#[test]
fn cmpxchg_stores_only_on_a_match() {
    let mut m = Mock::with_pages([PAGE]);
    m.fill(BASE, &5u64.to_le_bytes());
    let mut r = regs();
    r.rdi = BASE;
    r.rax = 5;
    r.rdx = 9;
    run(&[0xf0, 0x48, 0x0f, 0xb1, 0x17], &mut r, &mut m).unwrap(); // lock cmpxchg [rdi], rdx
    assert_eq!((m.u64_at(BASE), r.rax, r.rflags & ZF), (9, 5, ZF));
    run(&[0xf0, 0x48, 0x0f, 0xb1, 0x17], &mut r, &mut m).unwrap();
    assert_eq!((m.u64_at(BASE), r.rax, r.rflags & (ZF | CF)), (9, 9, CF), "no match: rax loaded, 5 < 9");
    assert_eq!(m.writes.len(), 2, "the old value is written back");
    // 32 bits: a match leaves rax alone, a miss loads it zero-extended.
    r.rax = 0xffff_ffff_0000_0009;
    r.rdx = 0x77;
    run(&[0x0f, 0xb1, 0x17], &mut r, &mut m).unwrap(); // cmpxchg [rdi], edx
    assert_eq!((m.u64_at(BASE), r.rax), (0x77, 0xffff_ffff_0000_0009));
    run(&[0x0f, 0xb1, 0x17], &mut r, &mut m).unwrap();
    assert_eq!(r.rax, 0x77);
    // 8 bits with a high-byte source.
    r.rax = 0x77;
    r.rcx = 0x4200;
    run(&[0x0f, 0xb0, 0x2f], &mut r, &mut m).unwrap(); // cmpxchg [rdi], ch
    assert_eq!(m.byte(BASE), 0x42);
}

#[test]
fn sse_stores_take_the_register_from_the_fxsave_area() {
    let mut fpu = FpuState::initial();
    for (i, b) in fpu.0[160..160 + 16 * 16].iter_mut().enumerate() {
        *b = i as u8; // xmm n holds bytes 16n..16n+15
    }
    let mut m = Mock::with_pages([PAGE]);
    let mut r = regs();
    r.rdi = BASE;
    let seg = SegmentBases::default();
    run_with(&[0x0f, 0x11, 0x0f], &mut r, &fpu, seg, &mut m).unwrap(); // movups [rdi], xmm1
    assert_eq!(m.bytes(BASE, 16), (16..32).collect::<Vec<u8>>());
    run_with(&[0x0f, 0x17, 0x77, 0x20], &mut r, &fpu, seg, &mut m).unwrap(); // movhps [rdi+0x20], xmm6
    assert_eq!(m.bytes(BASE + 0x20, 8), (104..112).collect::<Vec<u8>>());
    run_with(&[0xf3, 0x0f, 0x11, 0x5f, 0x40], &mut r, &fpu, seg, &mut m).unwrap(); // movss [rdi+0x40], xmm3
    assert_eq!(m.bytes(BASE + 0x40, 8), [48, 49, 50, 51, 0, 0, 0, 0]);
    run_with(&[0x66, 0x44, 0x0f, 0x7f, 0x47, 0x50], &mut r, &fpu, seg, &mut m).unwrap(); // movdqa [rdi+0x50], xmm8
    assert_eq!(m.bytes(BASE + 0x50, 16), (128..144).collect::<Vec<u8>>());
    // movaps needs 16-byte alignment: #GP, nothing written, RIP kept.
    let rip = r.rip;
    r.rdi = BASE + 0x108;
    assert_eq!(run_with(&[0x0f, 0x29, 0x07], &mut r, &fpu, seg, &mut m), Err(StoreError::Operand(OperandFault::GeneralProtection)));
    assert_eq!((r.rip, m.bytes(BASE + 0x108, 16)), (rip, alloc::vec![0; 16]));
}

#[test]
fn rep_stos_clears_a_page_table_in_one_access_per_page() {
    let mut m = Mock::with_pages([PAGE, PAGE + 1]);
    m.fill(BASE, &[0xee; 2 * PAGE_SIZE as usize]);
    let mut r = regs();
    r.rdi = BASE + 0x800;
    r.rcx = 512;
    r.rax = 0;
    run(&[0xf3, 0x48, 0xab], &mut r, &mut m).unwrap(); // rep stosq
    assert_eq!(m.writes, [(BASE + 0x800, 0x800), (BASE + PAGE_SIZE, 0x800)]);
    assert!(m.bytes(BASE + 0x800, 4096).iter().all(|b| *b == 0));
    assert_eq!((m.byte(BASE + 0x7ff), m.byte(BASE + 0x1800)), (0xee, 0xee));
    assert_eq!((r.rcx, r.rdi, r.rip), (0, BASE + 0x1800, RIP + 3));
    // Backwards (DF = 1), 16-bit elements; rcx = 0 does nothing.
    r.rflags |= 0x400;
    r.rdi = BASE + 0x10;
    r.rcx = 3;
    r.rax = 0xabcd;
    run(&[0x66, 0xf3, 0xab], &mut r, &mut m).unwrap();
    assert_eq!(m.bytes(BASE + 0xc, 6), [0xcd, 0xab, 0xcd, 0xab, 0xcd, 0xab]);
    assert_eq!((r.rcx, r.rdi), (0, BASE + 0xa));
    let before = m.clone();
    run(&[0x66, 0xf3, 0xab], &mut r, &mut m).unwrap();
    assert_eq!((m, r.rdi, r.rip), (before, BASE + 0xa, RIP + 9));
}

#[test]
fn a_fault_midway_leaves_the_registers_showing_the_work_done() {
    let mut m = Mock::with_pages([PAGE]);
    let mut r = regs();
    r.rdi = BASE + PAGE_SIZE - 16;
    r.rcx = 10;
    r.rax = 0x0101_0101_0101_0101;
    let f = run(&[0xf3, 0x48, 0xab], &mut r, &mut m);
    assert_eq!(f, Err(StoreError::Memory(Fault { va: BASE + PAGE_SIZE, error_code: 2 })));
    assert_eq!((r.rcx, r.rdi, r.rip), (8, BASE + PAGE_SIZE, RIP), "two elements done, eight to go");
    // Backwards into an unmapped page: CR2 is the first element's address.
    let mut m = Mock::with_pages([PAGE]);
    let mut r = regs();
    r.rflags |= 0x400;
    r.rdi = BASE + 8;
    r.rcx = 10;
    let f = run(&[0xf3, 0x48, 0xab], &mut r, &mut m);
    assert_eq!(f, Err(StoreError::Memory(Fault { va: BASE - 8, error_code: 2 })));
    assert_eq!((r.rcx, r.rdi), (8, BASE - 8));
}

#[test]
fn a_long_rep_stops_after_the_budget_and_resumes() {
    let pages = MAX_STRING_BYTES / PAGE_SIZE + 4;
    let mut m = Mock::with_pages(PAGE..PAGE + pages);
    let mut r = regs();
    r.rdi = BASE;
    r.rcx = pages * PAGE_SIZE;
    r.rax = 0x5a;
    run(&[0xf3, 0xaa], &mut r, &mut m).unwrap(); // rep stosb
    assert_eq!(
        (r.rip, r.rcx, r.rdi),
        (RIP, 4 * PAGE_SIZE, BASE + MAX_STRING_BYTES),
        "stopped, still on the instruction"
    );
    run(&[0xf3, 0xaa], &mut r, &mut m).unwrap();
    assert_eq!((r.rip, r.rcx), (RIP + 2, 0));
    assert!(m.bytes(BASE, (pages * PAGE_SIZE) as usize).iter().all(|b| *b == 0x5a));
}

#[test]
fn movs_copies_forward_backward_overlapping_and_with_a_segment() {
    let mut m = Mock::with_pages([PAGE, PAGE + 1, PAGE + 2]);
    let data: Vec<u8> = (0..=255).collect();
    m.fill(BASE + PAGE_SIZE - 100, &data);
    let mut r = regs();
    r.rsi = BASE + PAGE_SIZE - 100;
    r.rdi = BASE + 2 * PAGE_SIZE + 8;
    r.rcx = 32;
    run(&[0xf3, 0x48, 0xa5], &mut r, &mut m).unwrap(); // rep movsq
    assert_eq!(m.bytes(BASE + 2 * PAGE_SIZE + 8, 256), data);
    assert_eq!((r.rsi, r.rdi, r.rcx), (BASE + PAGE_SIZE + 156, BASE + 2 * PAGE_SIZE + 264, 0));
    // Overlap, destination one byte ahead: the first byte spreads (as the
    // CPU does element by element).
    r.rsi = BASE;
    r.rdi = BASE + 1;
    r.rcx = 20;
    m.fill(BASE, &[7, 1, 2, 3]);
    run(&[0xf3, 0xa4], &mut r, &mut m).unwrap(); // rep movsb
    assert_eq!(m.bytes(BASE, 21), [7; 21]);
    // Backwards, from fs:[rsi].
    let mut r = regs();
    r.rflags |= 0x400;
    m.fill(BASE + 0x200, &[1, 2, 3, 4]);
    r.rsi = 0x202 - 0x100;
    r.rdi = BASE + 0x302;
    r.rcx = 3;
    let seg = SegmentBases { fs: BASE + 0x100, gs: 0 };
    run_with(&[0x64, 0xf3, 0xa4], &mut r, &FpuState::initial(), seg, &mut m).unwrap();
    assert_eq!(m.bytes(BASE + 0x300, 3), [1, 2, 3]);
    assert_eq!((r.rsi, r.rdi), (0x1ff - 0x100, BASE + 0x2ff));
    // Without rep: one element, rcx untouched.
    let mut r = regs();
    r.rsi = BASE;
    r.rdi = BASE + 0x400;
    r.rcx = 99;
    run(&[0xa4], &mut r, &mut m).unwrap();
    assert_eq!((m.byte(BASE + 0x400), r.rcx, r.rsi, r.rdi), (7, 99, BASE + 1, BASE + 0x401));
}

#[test]
fn addr32_strings_use_and_zero_extend_32_bit_registers() {
    let mut m = Mock::with_pages([PAGE]);
    let mut r = regs();
    r.rdi = 0xffff_ffff_0000_0000 | BASE;
    r.rcx = 0xffff_ffff_0000_0004;
    r.rax = 0x33;
    run(&[0x67, 0xf3, 0xaa], &mut r, &mut m).unwrap(); // addr32 rep stosb
    assert_eq!(m.bytes(BASE, 5), [0x33, 0x33, 0x33, 0x33, 0]);
    assert_eq!((r.rdi, r.rcx), (BASE + 4, 0));
}

/// What a string instruction does, one element at a time, on the mock.
fn reference(size: u64, copy: bool, rep: bool, r: &mut GuestRegs, m: &mut Mock) -> Result<(), Fault> {
    let mut count = if rep { r.rcx } else { 1 };
    let step = |a: u64| if r.rflags & 0x400 != 0 { a.wrapping_sub(size) } else { a.wrapping_add(size) };
    while count > 0 {
        let mut buf = (r.rax & super::mask(size as u8)).to_le_bytes()[..size as usize].to_vec();
        if copy {
            m.read(r.rsi, &mut buf)?;
        }
        m.write(r.rdi, &buf)?;
        r.rdi = step(r.rdi);
        if copy {
            r.rsi = step(r.rsi);
        }
        count -= 1;
        if rep {
            r.rcx = count;
        }
    }
    r.rip += 1 + u64::from(rep) + u64::from(size == 8) + u64::from(size == 2);
    Ok(())
}

proptest! {
    /// Chunked string instructions end exactly as element-by-element ones:
    /// same memory, registers and fault, whatever the size, direction,
    /// overlap, page crossing, or an unmapped or read-only page on the way.
    #[test]
    fn strings_match_the_element_by_element_reference(
        size in prop::sample::select(vec![1u64, 2, 4, 8]),
        copy in any::<bool>(),
        rep in prop::bool::weighted(0.9),
        backward in any::<bool>(),
        count in 0u64..1500,
        dst in 0u64..4 * PAGE_SIZE,
        src in 0u64..4 * PAGE_SIZE,
        read_only in prop::option::of(0u64..4),
        seed in any::<u64>(),
    ) {
        // Pages PAGE..PAGE + 4 mapped (one maybe read-only), the ones
        // around them not.
        let mut m = Mock::with_pages(PAGE..PAGE + 4);
        let noise: Vec<u8> = (0..4 * PAGE_SIZE).map(|i| (i.wrapping_mul(seed | 1) >> 7) as u8).collect();
        m.fill(BASE, &noise);
        if let Some(p) = read_only {
            m.read_only.insert(PAGE + p);
        }
        let mut r = regs();
        r.rflags |= if backward { 0x400 } else { 0 };
        r.rdi = BASE + dst;
        r.rsi = BASE + src;
        r.rcx = count;
        r.rax = seed;
        let opcode = match (copy, size) { (true, 1) => 0xa4, (true, _) => 0xa5, (false, 1) => 0xaa, (false, _) => 0xab };
        let mut bytes = Vec::new();
        if size == 2 { bytes.push(0x66); }
        if rep { bytes.push(0xf3); }
        if size == 8 { bytes.push(0x48); }
        bytes.push(opcode);
        let (mut r2, mut m2) = (r, m.clone());
        let expected = reference(size, copy, rep, &mut r2, &mut m2);
        let got = run(&bytes, &mut r, &mut m);
        match expected {
            Ok(()) => prop_assert_eq!(got, Ok(())),
            Err(f) => {
                prop_assert_eq!(got, Err(StoreError::Memory(f)));
                r2.rip = RIP;
            }
        }
        prop_assert_eq!(r, r2);
        prop_assert_eq!(m.pages, m2.pages);
    }

    /// add and sub flags against a wide-arithmetic statement of the rules.
    #[test]
    fn add_sub_flags_follow_the_manual(size in prop::sample::select(vec![1u8, 2, 4, 8]), a in any::<u64>(), b in any::<u64>(), sub in any::<bool>()) {
        let m = super::mask(size);
        let (a, b) = (a & m, b & m);
        let bits = 8 * u32::from(size);
        let signed = |x: u64| ((x << (64 - bits)) as i64 >> (64 - bits)) as i128;
        let (wide, swide) = if sub {
            (i128::from(a) - i128::from(b), signed(a) - signed(b))
        } else {
            (i128::from(a) + i128::from(b), signed(a) + signed(b))
        };
        let result = wide as u64 & m;
        let nibble = if sub { (a & 0xf) < (b & 0xf) } else { (a & 0xf) + (b & 0xf) > 0xf };
        let smin = -(1i128 << (bits - 1));
        let expected = [
            (wide < 0 || wide > i128::from(m), CF),
            (swide < smin || swide > -smin - 1, OF),
            (nibble, AF),
            (result == 0, ZF),
            (result >> (bits - 1) & 1 == 1, SF),
            ((0..8).filter(|i| result >> i & 1 == 1).count() & 1 == 0, PF),
        ].iter().filter(|(set, _)| *set).fold(0, |f, (_, flag)| f | flag);
        let op = if sub { crate::decode::AluOp::Sub } else { crate::decode::AluOp::Add };
        prop_assert_eq!(alu::compute(op, a, b, size), (result, expected));
    }
}

#[test]
fn a_non_canonical_destination_is_gp_or_ss_and_a_string_stops_at_it() {
    // The last page of the lower half, then the first non-canonical address.
    let top_page = 0x7fff_ffff_f000 / PAGE_SIZE;
    let mut m = Mock::with_pages([top_page, PAGE]);
    let mut r = regs();
    r.rdi = 0x8000_0000_0000;
    r.rbp = 0x8000_0000_0000;
    assert_eq!(run(&[0x48, 0x89, 0x07], &mut r, &mut m), Err(StoreError::Operand(OperandFault::GeneralProtection))); // mov [rdi], rax
    assert_eq!(run(&[0x48, 0x89, 0x45, 0x00], &mut r, &mut m), Err(StoreError::Operand(OperandFault::StackSegment))); // mov [rbp], rax
    r.rdi = 0x7fff_ffff_fffc; // 4 bytes canonical, 4 not
    assert_eq!(run(&[0x48, 0x89, 0x07], &mut r, &mut m), Err(StoreError::Operand(OperandFault::GeneralProtection)));
    assert!(m.writes.is_empty());
    assert_eq!(r.rip, RIP);
    // rep stosq from 16 bytes below the top: two elements go in, then the
    // CPU faults on the third, with rdi and rcx showing the work done.
    r.rdi = 0x7fff_ffff_fff0;
    r.rcx = 4;
    r.rax = 0x1111_2222_3333_4444;
    assert_eq!(run(&[0xf3, 0x48, 0xab], &mut r, &mut m), Err(StoreError::Operand(OperandFault::GeneralProtection)));
    assert_eq!((r.rdi, r.rcx, r.rip), (0x8000_0000_0000, 2, RIP));
    assert_eq!(m.u64_at(0x7fff_ffff_fff8), 0x1111_2222_3333_4444);
    // movs reads its source through SS with an `ss:` override.
    r.rsi = 0x8000_0000_0000;
    r.rdi = BASE;
    r.rcx = 1;
    assert_eq!(run(&[0x36, 0xf3, 0x48, 0xa5], &mut r, &mut m), Err(StoreError::Operand(OperandFault::StackSegment)));
    assert_eq!(run(&[0xf3, 0x48, 0xa5], &mut r, &mut m), Err(StoreError::Operand(OperandFault::GeneralProtection)));
}
