//! Classic BPF (the `struct bpf_insn` instruction set of libpcap and BSD/Linux sockets):
//! a validator and an interpreter with the semantics of libpcap's `bpf_filter()`.
//!
//! The machine has a 32-bit accumulator `A`, an index register `X`, 16 words of scratch
//! memory `M[]`, all zero at the start, and the frame as read-only bytes (link header first).
//! Loads from the frame are big-endian (network order).
//!
//! Programs come from analyzers the sensor does not trust, so [`Program::new`] refuses
//! anything libpcap's `bpf_validate()` refuses and a little more:
//! - opcodes other than the exact ones `bpf_filter()` executes (no stray bits in any field);
//! - scratch memory indices of 16 or more;
//! - division or modulo by the constant 0, and shifts by a constant of 32 or more (as the
//!   Linux kernel and libpcap's current validator do);
//! - jumps whose target is past the last instruction. Offsets are unsigned, so every jump is
//!   forward and every program ends within as many steps as it has instructions. (libpcap
//!   sign-extends `BPF_JA` offsets to implement `ip6 protochain` with a backward jump; such
//!   programs are refused here, as the kernels refuse them);
//! - loads at the Linux kernel's negative offsets (`SKF_LL_OFF`, `SKF_NET_OFF`, `SKF_AD_OFF`:
//!   `k >= 0xffe0_0000` for `ABS`, `IND` and `MSH` loads). Only a kernel socket filter can
//!   serve those; programs `pcap_compile` makes for a capture file never use them;
//! - programs that are empty, longer than [`MAX_INSNS`], or whose last instruction is not a
//!   return.
//!
//! The interpreter is written not to rely on validation: it never panics, never loops and never
//! reads outside the frame, whatever the instructions. Where a validated program cannot reach a
//! case (an unknown opcode, a jump or fall-through past the end, a scratch index out of range)
//! it returns 0, as libpcap does. At run time, as in libpcap: a load that does not fit in the
//! captured bytes, and a division or modulo by `X == 0`, end the program with 0 (reject); a
//! shift by `X >= 32` gives 0; arithmetic wraps modulo 2^32.

use std::fmt;

/// Most instructions a program may have (`BPF_MAXINSNS` of the BSD and Linux kernels).
pub const MAX_INSNS: usize = 4096;

/// Words of scratch memory (`BPF_MEMWORDS`).
const MEMWORDS: usize = 16;

/// The lowest of the Linux kernel's special negative offsets (`SKF_LL_OFF`, -0x200000); from
/// here up also lie `SKF_NET_OFF` (-0x100000) and the ancillary data at `SKF_AD_OFF` (-0x1000).
const KERNEL_OFFSETS: u32 = 0xffe0_0000;

/// The opcodes `bpf_filter()` executes, spelled as `<pcap/bpf.h>` combines its fields.
#[allow(clippy::identity_op)]
mod code {
    // Classes.
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const ALU: u16 = 0x04;
    const JMP: u16 = 0x05;
    const RET: u16 = 0x06;
    const MISC: u16 = 0x07;
    // Load sizes.
    const W: u16 = 0x00;
    const H: u16 = 0x08;
    const B: u16 = 0x10;
    // Load modes.
    const IMM: u16 = 0x00;
    const ABS: u16 = 0x20;
    const IND: u16 = 0x40;
    const MEM: u16 = 0x60;
    const LEN: u16 = 0x80;
    const MSH: u16 = 0xa0;
    // Operand sources: the constant `k` or the register `X` (`A` for returns).
    const K: u16 = 0x00;
    const X: u16 = 0x08;
    const RET_SRC_A: u16 = 0x10;

    pub const RET_K: u16 = RET | K;
    pub const RET_A: u16 = RET | RET_SRC_A;

    pub const LD_W_ABS: u16 = LD | W | ABS;
    pub const LD_H_ABS: u16 = LD | H | ABS;
    pub const LD_B_ABS: u16 = LD | B | ABS;
    pub const LD_W_IND: u16 = LD | W | IND;
    pub const LD_H_IND: u16 = LD | H | IND;
    pub const LD_B_IND: u16 = LD | B | IND;
    pub const LD_W_LEN: u16 = LD | W | LEN;
    pub const LDX_W_LEN: u16 = LDX | W | LEN;
    pub const LDX_B_MSH: u16 = LDX | B | MSH;
    pub const LD_IMM: u16 = LD | W | IMM;
    pub const LDX_IMM: u16 = LDX | W | IMM;
    pub const LD_MEM: u16 = LD | W | MEM;
    pub const LDX_MEM: u16 = LDX | W | MEM;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;

    pub const JA: u16 = JMP | 0x00;
    pub const JEQ_K: u16 = JMP | 0x10 | K;
    pub const JGT_K: u16 = JMP | 0x20 | K;
    pub const JGE_K: u16 = JMP | 0x30 | K;
    pub const JSET_K: u16 = JMP | 0x40 | K;
    pub const JEQ_X: u16 = JMP | 0x10 | X;
    pub const JGT_X: u16 = JMP | 0x20 | X;
    pub const JGE_X: u16 = JMP | 0x30 | X;
    pub const JSET_X: u16 = JMP | 0x40 | X;

    pub const ADD_K: u16 = ALU | 0x00 | K;
    pub const SUB_K: u16 = ALU | 0x10 | K;
    pub const MUL_K: u16 = ALU | 0x20 | K;
    pub const DIV_K: u16 = ALU | 0x30 | K;
    pub const OR_K: u16 = ALU | 0x40 | K;
    pub const AND_K: u16 = ALU | 0x50 | K;
    pub const LSH_K: u16 = ALU | 0x60 | K;
    pub const RSH_K: u16 = ALU | 0x70 | K;
    pub const MOD_K: u16 = ALU | 0x90 | K;
    pub const XOR_K: u16 = ALU | 0xa0 | K;
    pub const ADD_X: u16 = ALU | 0x00 | X;
    pub const SUB_X: u16 = ALU | 0x10 | X;
    pub const MUL_X: u16 = ALU | 0x20 | X;
    pub const DIV_X: u16 = ALU | 0x30 | X;
    pub const OR_X: u16 = ALU | 0x40 | X;
    pub const AND_X: u16 = ALU | 0x50 | X;
    pub const LSH_X: u16 = ALU | 0x60 | X;
    pub const RSH_X: u16 = ALU | 0x70 | X;
    pub const MOD_X: u16 = ALU | 0x90 | X;
    pub const XOR_X: u16 = ALU | 0xa0 | X;
    pub const NEG: u16 = ALU | 0x80;

    pub const TAX: u16 = MISC | 0x00;
    pub const TXA: u16 = MISC | 0x80;
}

use code::*;

/// One instruction as libpcap's `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// The opcode: class, size or operation, mode or source.
    pub code: u16,
    /// Instructions to skip when a conditional jump's test holds.
    pub jt: u8,
    /// Instructions to skip when it does not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

impl Insn {
    /// An instruction from its four fields.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// Unpacks a word holding `code` in bits 48..64, `jt` in 40..48, `jf` in 32..40 and `k`
    /// in 0..32.
    pub const fn from_u64(w: u64) -> Insn {
        Insn {
            code: (w >> 48) as u16,
            jt: (w >> 40) as u8,
            jf: (w >> 32) as u8,
            k: w as u32,
        }
    }

    /// Packs the instruction as [`Insn::from_u64`] reads it.
    pub const fn to_u64(self) -> u64 {
        (self.code as u64) << 48 | (self.jt as u64) << 40 | (self.jf as u64) << 32 | self.k as u64
    }
}

/// Why a program was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// No instructions at all.
    #[error("the program has no instructions")]
    Empty,
    /// More than [`MAX_INSNS`] instructions.
    #[error("the program has {len} instructions, more than the {MAX_INSNS} allowed")]
    TooLong { len: usize },
    /// An opcode `bpf_filter()` does not execute.
    #[error("instruction {at} has opcode {code:#06x}, which is not a classic BPF instruction")]
    BadOpcode { at: usize, code: u16 },
    /// A jump (taken or not) to past the last instruction.
    #[error("instruction {at} jumps past the end of the program")]
    JumpOutOfRange { at: usize },
    /// A scratch memory index of 16 or more.
    #[error("instruction {at} addresses a scratch memory word beyond the {MEMWORDS} there are")]
    BadMemIndex { at: usize },
    /// A division or modulo by the constant 0.
    #[error("instruction {at} divides by the constant zero")]
    DivByZero { at: usize },
    /// A shift by a constant of 32 or more.
    #[error("instruction {at} shifts by a constant of 32 bits or more")]
    ShiftTooLarge { at: usize },
    /// A load at one of the Linux kernel's special negative offsets.
    #[error("instruction {at} loads from a Linux kernel negative offset, which only a kernel socket filter can serve")]
    KernelOffset { at: usize },
    /// The last instruction is not a return, so the program could run off its end.
    #[error("the last instruction is not a return")]
    NoReturnAtEnd,
}

/// A validated program: see the module documentation for what validation guarantees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

impl Program {
    /// Validates `insns`; the first problem found, in instruction order, is the error.
    pub fn new(insns: Vec<Insn>) -> Result<Program, Invalid> {
        let len = insns.len();
        if len == 0 {
            return Err(Invalid::Empty);
        }
        if len > MAX_INSNS {
            return Err(Invalid::TooLong { len });
        }
        for (at, insn) in insns.iter().enumerate() {
            check(at, *insn, len)?;
        }
        if !matches!(insns[len - 1].code, RET_K | RET_A) {
            return Err(Invalid::NoReturnAtEnd);
        }
        Ok(Program { insns })
    }

    /// A program that skipped validation, to show the interpreter survives anything.
    #[cfg(test)]
    fn unchecked(insns: Vec<Insn>) -> Program {
        Program { insns }
    }

    /// Runs the program on `pkt` (the captured bytes, link header first) whose length on the
    /// wire is `wirelen`; returns the program's return value (0 = reject; libpcap semantics:
    /// the number of bytes to keep).
    pub fn run(&self, pkt: &[u8], wirelen: u32) -> u32 {
        execute(&self.insns, pkt, wirelen).unwrap_or(0)
    }

    /// Runs instructions that were never validated, as [`Program::run`] would (what no valid
    /// program could reach, such as an unknown opcode or running off the end, returns 0). The
    /// sensor never does this; the fuzzer does, to show the interpreter needs validation for
    /// no safety of its own.
    pub fn run_unvalidated(insns: &[Insn], pkt: &[u8], wirelen: u32) -> u32 {
        execute(insns, pkt, wirelen).unwrap_or(0)
    }

    /// Whether the program accepts the frame (returns anything but 0).
    pub fn matches(&self, pkt: &[u8], wirelen: u32) -> bool {
        self.run(pkt, wirelen) != 0
    }

    /// The number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false for a validated program; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The instructions, as given to [`Program::new`].
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }
}

/// Checks one instruction, at index `at` of a program of `len` instructions.
fn check(at: usize, insn: Insn, len: usize) -> Result<(), Invalid> {
    let Insn { code, jt, jf, k } = insn;
    // Widened so that no sum of an index and an offset can overflow.
    let fits = |offset: u32| (at as u64) + 1 + u64::from(offset) < len as u64;
    match code {
        RET_K | RET_A | LD_W_LEN | LDX_W_LEN | LD_IMM | LDX_IMM | TAX | TXA | NEG => Ok(()),
        ADD_K | SUB_K | MUL_K | OR_K | AND_K | XOR_K => Ok(()),
        ADD_X | SUB_X | MUL_X | DIV_X | OR_X | AND_X | LSH_X | RSH_X | MOD_X | XOR_X => Ok(()),
        LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND | LDX_B_MSH => {
            if k >= KERNEL_OFFSETS {
                Err(Invalid::KernelOffset { at })
            } else {
                Ok(())
            }
        }
        LD_MEM | LDX_MEM | ST | STX => {
            if k as usize >= MEMWORDS {
                Err(Invalid::BadMemIndex { at })
            } else {
                Ok(())
            }
        }
        DIV_K | MOD_K => {
            if k == 0 {
                Err(Invalid::DivByZero { at })
            } else {
                Ok(())
            }
        }
        LSH_K | RSH_K => {
            if k >= 32 {
                Err(Invalid::ShiftTooLarge { at })
            } else {
                Ok(())
            }
        }
        JA => {
            if fits(k) {
                Ok(())
            } else {
                Err(Invalid::JumpOutOfRange { at })
            }
        }
        JEQ_K | JGT_K | JGE_K | JSET_K | JEQ_X | JGT_X | JGE_X | JSET_X => {
            if fits(jt.into()) && fits(jf.into()) {
                Ok(())
            } else {
                Err(Invalid::JumpOutOfRange { at })
            }
        }
        _ => Err(Invalid::BadOpcode { at, code }),
    }
}

/// The interpreter; `None` is a reject (0) for any reason.
///
/// The program counter only grows, since jump offsets are unsigned, so the loop ends within
/// `insns.len()` steps whatever the instructions.
fn execute(insns: &[Insn], pkt: &[u8], wirelen: u32) -> Option<u32> {
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; MEMWORDS];
    let mut pc = 0usize;
    while let Some(&Insn { code, jt, jf, k }) = insns.get(pc) {
        pc += 1;
        let branch = |taken: bool| usize::from(if taken { jt } else { jf });
        match code {
            RET_K => return Some(k),
            RET_A => return Some(a),

            LD_W_ABS => a = u32::from_be_bytes(bytes(pkt, k as usize)?),
            LD_H_ABS => a = u16::from_be_bytes(bytes(pkt, k as usize)?).into(),
            LD_B_ABS => a = (*pkt.get(k as usize)?).into(),
            LD_W_IND => a = u32::from_be_bytes(bytes(pkt, index(x, k)?)?),
            LD_H_IND => a = u16::from_be_bytes(bytes(pkt, index(x, k)?)?).into(),
            LD_B_IND => a = (*pkt.get(index(x, k)?)?).into(),
            LD_W_LEN => a = wirelen,
            LDX_W_LEN => x = wirelen,
            // The IPv4 header length: the low nibble of a byte, in 32-bit words.
            LDX_B_MSH => x = u32::from(*pkt.get(k as usize)? & 0xf) << 2,
            LD_IMM => a = k,
            LDX_IMM => x = k,
            LD_MEM => a = *mem.get(k as usize)?,
            LDX_MEM => x = *mem.get(k as usize)?,
            ST => *mem.get_mut(k as usize)? = a,
            STX => *mem.get_mut(k as usize)? = x,

            // A target past the end ends the loop at the next fetch.
            JA => pc = pc.checked_add(k as usize)?,
            JEQ_K => pc += branch(a == k),
            JGT_K => pc += branch(a > k),
            JGE_K => pc += branch(a >= k),
            JSET_K => pc += branch(a & k != 0),
            JEQ_X => pc += branch(a == x),
            JGT_X => pc += branch(a > x),
            JGE_X => pc += branch(a >= x),
            JSET_X => pc += branch(a & x != 0),

            ADD_K => a = a.wrapping_add(k),
            SUB_K => a = a.wrapping_sub(k),
            MUL_K => a = a.wrapping_mul(k),
            DIV_K => a = a.checked_div(k)?,
            MOD_K => a = a.checked_rem(k)?,
            OR_K => a |= k,
            AND_K => a &= k,
            XOR_K => a ^= k,
            LSH_K => a = a.checked_shl(k).unwrap_or(0),
            RSH_K => a = a.checked_shr(k).unwrap_or(0),
            ADD_X => a = a.wrapping_add(x),
            SUB_X => a = a.wrapping_sub(x),
            MUL_X => a = a.wrapping_mul(x),
            DIV_X => a = a.checked_div(x)?,
            MOD_X => a = a.checked_rem(x)?,
            OR_X => a |= x,
            AND_X => a &= x,
            XOR_X => a ^= x,
            LSH_X => a = a.checked_shl(x).unwrap_or(0),
            RSH_X => a = a.checked_shr(x).unwrap_or(0),
            NEG => a = a.wrapping_neg(),

            TAX => x = a,
            TXA => a = x,

            _ => return None,
        }
    }
    None
}

/// The frame offset `X + k` of an indirect load, if it can be one at all.
fn index(x: u32, k: u32) -> Option<usize> {
    (x as usize).checked_add(k as usize)
}

/// `N` bytes of the frame from `at`, if they were captured.
fn bytes<const N: usize>(pkt: &[u8], at: usize) -> Option<[u8; N]> {
    pkt.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl fmt::Display for Insn {
    /// As libpcap's `bpf_dump` prints with `-ddd`: `code jt jf k` in decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.code, self.jt, self.jf, self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn::new(code, jt, jf, k)
    }

    fn stmt(code: u16, k: u32) -> Insn {
        Insn::new(code, 0, 0, k)
    }

    fn prog(insns: &[Insn]) -> Program {
        Program::new(insns.to_vec()).expect("valid program")
    }

    /// Runs a validated program on a frame captured whole.
    fn run(insns: &[Insn], pkt: &[u8]) -> u32 {
        prog(insns).run(pkt, pkt.len() as u32)
    }

    /// `A = a; X = x; A = A op (k or X); return A`.
    fn alu(op: u16, a: u32, x: u32, k: u32) -> u32 {
        run(
            &[
                stmt(LD_IMM, a),
                stmt(LDX_IMM, x),
                stmt(op, k),
                stmt(RET_A, 0),
            ],
            &[],
        )
    }

    /// `A = a; X = x; if A op (k or X) return 1 else return 2`.
    fn jump(op: u16, a: u32, x: u32, k: u32) -> u32 {
        run(
            &[
                stmt(LD_IMM, a),
                stmt(LDX_IMM, x),
                i(op, 0, 1, k),
                stmt(RET_K, 1),
                stmt(RET_K, 2),
            ],
            &[],
        )
    }

    const FRAME: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf5];

    #[test]
    fn insn_round_trips_through_u64() {
        let insn = i(0x1234, 0x56, 0x78, 0x9abc_def0);
        assert_eq!(insn.to_u64(), 0x1234_5678_9abc_def0);
        assert_eq!(Insn::from_u64(0x1234_5678_9abc_def0), insn);
        assert_eq!(Insn::from_u64(u64::MAX).to_u64(), u64::MAX);
        assert_eq!(insn.to_string(), "4660 86 120 2596069104");
    }

    #[test]
    fn ret_returns_k_or_a() {
        assert_eq!(run(&[stmt(RET_K, 96)], &[]), 96);
        assert_eq!(run(&[stmt(RET_K, 0)], &[]), 0);
        assert_eq!(run(&[stmt(LD_IMM, 7), stmt(RET_A, 0)], &[]), 7);
        // A starts at zero.
        assert_eq!(run(&[stmt(RET_A, 0)], &[]), 0);
        assert!(prog(&[stmt(RET_K, 1)]).matches(&[], 0));
        assert!(!prog(&[stmt(RET_K, 0)]).matches(&[], 0));
    }

    #[test]
    fn absolute_loads_are_big_endian() {
        assert_eq!(
            run(&[stmt(LD_W_ABS, 1), stmt(RET_A, 0)], &FRAME),
            0x3456_789a
        );
        assert_eq!(run(&[stmt(LD_H_ABS, 1), stmt(RET_A, 0)], &FRAME), 0x3456);
        assert_eq!(run(&[stmt(LD_B_ABS, 7), stmt(RET_A, 0)], &FRAME), 0xf5);
        // The last bytes that fit.
        assert_eq!(
            run(&[stmt(LD_W_ABS, 4), stmt(RET_A, 0)], &FRAME),
            0x9abc_def5
        );
        assert_eq!(run(&[stmt(LD_H_ABS, 6), stmt(RET_A, 0)], &FRAME), 0xdef5);
    }

    #[test]
    fn indirect_loads_add_x() {
        let ind = |op| run(&[stmt(LDX_IMM, 2), stmt(op, 1), stmt(RET_A, 0)], &FRAME);
        assert_eq!(ind(LD_W_IND), 0x789a_bcde);
        assert_eq!(ind(LD_H_IND), 0x789a);
        assert_eq!(ind(LD_B_IND), 0x78);
    }

    #[test]
    fn msh_loads_the_ip_header_length_into_x() {
        let ihl = [0u8, 0x45];
        assert_eq!(
            run(&[stmt(LDX_B_MSH, 1), stmt(TXA, 0), stmt(RET_A, 0)], &ihl),
            20
        );
        // Only the low nibble counts.
        assert_eq!(
            run(&[stmt(LDX_B_MSH, 0), stmt(TXA, 0), stmt(RET_A, 0)], &[0xff]),
            60
        );
    }

    #[test]
    fn len_loads_the_wire_length_not_the_captured_one() {
        let p = prog(&[stmt(LD_W_LEN, 0), stmt(RET_A, 0)]);
        assert_eq!(p.run(&FRAME, 1500), 1500);
        let p = prog(&[stmt(LDX_W_LEN, 0), stmt(TXA, 0), stmt(RET_A, 0)]);
        assert_eq!(p.run(&FRAME, 9000), 9000);
    }

    #[test]
    fn immediates_and_scratch_memory() {
        assert_eq!(run(&[stmt(LD_IMM, 5), stmt(RET_A, 0)], &[]), 5);
        assert_eq!(
            run(&[stmt(LDX_IMM, 6), stmt(TXA, 0), stmt(RET_A, 0)], &[]),
            6
        );
        let p = [
            stmt(LD_IMM, 11),
            stmt(ST, 0),
            stmt(LDX_IMM, 22),
            stmt(STX, 15),
            stmt(LD_IMM, 0),
            stmt(LDX_MEM, 0),
            stmt(LD_MEM, 15),
            stmt(ADD_X, 0),
            stmt(RET_A, 0),
        ];
        assert_eq!(run(&p, &[]), 33);
        // Scratch memory starts zeroed.
        assert_eq!(
            run(&[stmt(LD_IMM, 9), stmt(LD_MEM, 3), stmt(RET_A, 0)], &[]),
            0
        );
    }

    #[test]
    fn alu_with_k() {
        assert_eq!(alu(ADD_K, 3, 0, 4), 7);
        assert_eq!(alu(ADD_K, u32::MAX, 0, 2), 1);
        assert_eq!(alu(SUB_K, 3, 0, 4), u32::MAX);
        assert_eq!(alu(MUL_K, 0x8000_0001, 0, 2), 2);
        assert_eq!(alu(DIV_K, 17, 0, 5), 3);
        assert_eq!(alu(MOD_K, 17, 0, 5), 2);
        assert_eq!(alu(AND_K, 0b1100, 0, 0b1010), 0b1000);
        assert_eq!(alu(OR_K, 0b1100, 0, 0b1010), 0b1110);
        assert_eq!(alu(XOR_K, 0b1100, 0, 0b1010), 0b0110);
        assert_eq!(alu(LSH_K, 0x8000_0003, 0, 1), 6);
        assert_eq!(alu(LSH_K, 1, 0, 31), 0x8000_0000);
        assert_eq!(alu(RSH_K, 0x8000_0000, 0, 31), 1);
        assert_eq!(alu(NEG, 1, 0, 0), u32::MAX);
        assert_eq!(alu(NEG, 0x8000_0000, 0, 0), 0x8000_0000);
        assert_eq!(alu(NEG, 0, 0, 0), 0);
    }

    #[test]
    fn alu_with_x() {
        assert_eq!(alu(ADD_X, 3, 4, 99), 7);
        assert_eq!(alu(SUB_X, 3, 4, 99), u32::MAX);
        assert_eq!(alu(MUL_X, 6, 7, 99), 42);
        assert_eq!(alu(DIV_X, 17, 5, 99), 3);
        assert_eq!(alu(MOD_X, 17, 5, 99), 2);
        assert_eq!(alu(AND_X, 0b1100, 0b1010, 99), 0b1000);
        assert_eq!(alu(OR_X, 0b1100, 0b1010, 99), 0b1110);
        assert_eq!(alu(XOR_X, 0b1100, 0b1010, 99), 0b0110);
        assert_eq!(alu(LSH_X, 3, 4, 99), 48);
        assert_eq!(alu(RSH_X, 48, 4, 99), 3);
        // Shifts by 32 or more give 0, as libpcap's `bpf_filter()` does.
        assert_eq!(alu(LSH_X, u32::MAX, 32, 0), 0);
        assert_eq!(alu(RSH_X, u32::MAX, 32, 0), 0);
        assert_eq!(alu(LSH_X, u32::MAX, u32::MAX, 0), 0);
        assert_eq!(alu(RSH_X, u32::MAX, 33, 0), 0);
    }

    #[test]
    fn division_by_x_zero_rejects() {
        // Not a 0 result that the program goes on with: the program ends there.
        for op in [DIV_X, MOD_X] {
            let p = [
                stmt(LD_IMM, 7),
                stmt(LDX_IMM, 0),
                stmt(op, 0),
                stmt(RET_K, 1),
            ];
            assert_eq!(run(&p, &[]), 0);
        }
    }

    #[test]
    fn misc_moves_between_a_and_x() {
        assert_eq!(
            run(
                &[
                    stmt(LD_IMM, 5),
                    stmt(TAX, 0),
                    stmt(LD_IMM, 0),
                    stmt(TXA, 0),
                    stmt(RET_A, 0)
                ],
                &[]
            ),
            5
        );
    }

    #[test]
    fn conditional_jumps() {
        for (op, a, x, k, taken) in [
            (JEQ_K, 5, 0, 5, true),
            (JEQ_K, 5, 0, 6, false),
            (JGT_K, 6, 0, 5, true),
            (JGT_K, 5, 0, 5, false),
            (JGE_K, 5, 0, 5, true),
            (JGE_K, 4, 0, 5, false),
            (JSET_K, 0b110, 0, 0b010, true),
            (JSET_K, 0b101, 0, 0b010, false),
            (JEQ_X, 5, 5, 0, true),
            (JEQ_X, 5, 6, 5, false),
            (JGT_X, 6, 5, 0, true),
            (JGT_X, 5, 5, 9, false),
            (JGE_X, 5, 5, 9, true),
            (JGE_X, 4, 5, 0, false),
            (JSET_X, 0b110, 0b010, 0, true),
            (JSET_X, 0b101, 0b010, 0xff, false),
            // Comparisons are unsigned.
            (JGT_K, 0x8000_0000, 0, 1, true),
            (JGT_X, 0x8000_0000, 1, 0, true),
        ] {
            let want = if taken { 1 } else { 2 };
            assert_eq!(jump(op, a, x, k), want, "{op:#x} a={a} x={x} k={k}");
        }
    }

    #[test]
    fn unconditional_jump_skips_k_instructions() {
        let p = [stmt(JA, 2), stmt(RET_K, 1), stmt(RET_K, 2), stmt(RET_K, 3)];
        assert_eq!(run(&p, &[]), 3);
        let p = [stmt(JA, 0), stmt(RET_K, 1)];
        assert_eq!(run(&p, &[]), 1);
        // Offsets in both branches of a conditional jump.
        let p = [
            stmt(LD_IMM, 1),
            i(JEQ_K, 2, 1, 1),
            stmt(RET_K, 10),
            stmt(RET_K, 20),
            stmt(RET_K, 30),
        ];
        assert_eq!(run(&p, &[]), 30);
    }

    #[test]
    fn loads_past_the_captured_bytes_reject() {
        // Each load just fits, then ask for one byte more.
        let fits = |insns: &[Insn], pkt: &[u8]| run(insns, pkt) != 0;
        let abs = |op, k| [stmt(op, k), stmt(RET_K, 1)];
        let ind = |op, x, k| [stmt(LDX_IMM, x), stmt(op, k), stmt(RET_K, 1)];
        assert!(fits(&abs(LD_W_ABS, 4), &FRAME));
        assert!(!fits(&abs(LD_W_ABS, 5), &FRAME));
        assert!(fits(&abs(LD_H_ABS, 6), &FRAME));
        assert!(!fits(&abs(LD_H_ABS, 7), &FRAME));
        assert!(fits(&abs(LD_B_ABS, 7), &FRAME));
        assert!(!fits(&abs(LD_B_ABS, 8), &FRAME));
        assert!(fits(&abs(LDX_B_MSH, 7), &FRAME));
        assert!(!fits(&abs(LDX_B_MSH, 8), &FRAME));
        assert!(fits(&ind(LD_W_IND, 2, 2), &FRAME));
        assert!(!fits(&ind(LD_W_IND, 2, 3), &FRAME));
        assert!(!fits(&ind(LD_W_IND, 3, 2), &FRAME));
        assert!(fits(&ind(LD_H_IND, 3, 3), &FRAME));
        assert!(!fits(&ind(LD_H_IND, 3, 4), &FRAME));
        assert!(fits(&ind(LD_B_IND, 3, 4), &FRAME));
        assert!(!fits(&ind(LD_B_IND, 4, 4), &FRAME));
        // Offsets whose sum overflows 32 bits must not wrap back into the frame.
        assert!(!fits(&ind(LD_B_IND, u32::MAX, 1), &FRAME));
        assert!(!fits(&ind(LD_W_IND, 0xffff_fffe, 3), &FRAME));
        assert!(!fits(&ind(LD_H_IND, 1, 0xffdf_ffff), &FRAME));
        assert!(!fits(&abs(LD_W_ABS, 0xffdf_fffe), &FRAME));
        // Nothing captured: every load rejects.
        assert!(!fits(&abs(LD_B_ABS, 0), &[]));
        // Frames that end early reject even where the wire length says the bytes exist.
        assert_eq!(prog(&abs(LD_W_ABS, 4)).run(&FRAME[..7], 1500), 0);
    }

    #[test]
    fn each_refusal() {
        let ret = stmt(RET_K, 1);
        let cases: Vec<(Vec<Insn>, Invalid)> = vec![
            (vec![], Invalid::Empty),
            (
                vec![ret; MAX_INSNS + 1],
                Invalid::TooLong { len: MAX_INSNS + 1 },
            ),
            (
                vec![stmt(0x0e, 0), ret],
                Invalid::BadOpcode { at: 0, code: 0x0e },
            ),
            // LD with the H size and IMM mode is not an instruction.
            (
                vec![ret, stmt(LD_IMM | 0x08, 0), ret],
                Invalid::BadOpcode { at: 1, code: 0x08 },
            ),
            // High bits of the 16-bit code are not ignored.
            (
                vec![stmt(0x100 | RET_K, 0)],
                Invalid::BadOpcode { at: 0, code: 0x106 },
            ),
            // The class of `BPF_MISC` with an unknown operation.
            (
                vec![stmt(0x27, 0), ret],
                Invalid::BadOpcode { at: 0, code: 0x27 },
            ),
            (vec![stmt(JA, 1), ret], Invalid::JumpOutOfRange { at: 0 }),
            (
                vec![stmt(JA, u32::MAX), ret],
                Invalid::JumpOutOfRange { at: 0 },
            ),
            // A backward jump as libpcap writes it for `protochain`.
            (
                vec![ret, stmt(JA, (-2i32) as u32), ret],
                Invalid::JumpOutOfRange { at: 1 },
            ),
            (
                vec![i(JEQ_K, 1, 0, 0), ret],
                Invalid::JumpOutOfRange { at: 0 },
            ),
            (
                vec![i(JSET_X, 0, 1, 0), ret],
                Invalid::JumpOutOfRange { at: 0 },
            ),
            (
                vec![i(JGT_K, 255, 255, 0), ret],
                Invalid::JumpOutOfRange { at: 0 },
            ),
            (vec![stmt(LD_MEM, 16), ret], Invalid::BadMemIndex { at: 0 }),
            (
                vec![stmt(LDX_MEM, u32::MAX), ret],
                Invalid::BadMemIndex { at: 0 },
            ),
            (vec![stmt(ST, 16), ret], Invalid::BadMemIndex { at: 0 }),
            (vec![stmt(STX, 100), ret], Invalid::BadMemIndex { at: 0 }),
            (vec![stmt(DIV_K, 0), ret], Invalid::DivByZero { at: 0 }),
            (vec![stmt(MOD_K, 0), ret], Invalid::DivByZero { at: 0 }),
            (vec![stmt(LSH_K, 32), ret], Invalid::ShiftTooLarge { at: 0 }),
            (
                vec![stmt(RSH_K, u32::MAX), ret],
                Invalid::ShiftTooLarge { at: 0 },
            ),
            // SKF_AD_OFF + SKF_AD_PROTOCOL, SKF_AD_OFF + SKF_AD_VLAN_TAG, SKF_NET_OFF, SKF_LL_OFF.
            (
                vec![stmt(LD_H_ABS, 0xffff_f000), ret],
                Invalid::KernelOffset { at: 0 },
            ),
            (
                vec![stmt(LD_B_ABS, 0xffff_f02c), ret],
                Invalid::KernelOffset { at: 0 },
            ),
            (
                vec![stmt(LD_W_IND, 0xfff0_0000), ret],
                Invalid::KernelOffset { at: 0 },
            ),
            (
                vec![stmt(LDX_B_MSH, 0xffe0_0000), ret],
                Invalid::KernelOffset { at: 0 },
            ),
            (vec![stmt(LD_IMM, 0)], Invalid::NoReturnAtEnd),
            (vec![ret, stmt(TAX, 0)], Invalid::NoReturnAtEnd),
        ];
        for (insns, want) in cases {
            assert_eq!(Program::new(insns.clone()), Err(want.clone()), "{insns:?}");
        }
    }

    #[test]
    fn limits_that_are_still_valid() {
        // The longest program, the last scratch word, the farthest jumps, the largest offset.
        assert_eq!(
            Program::new(vec![stmt(RET_K, 1); MAX_INSNS]).unwrap().len(),
            MAX_INSNS
        );
        let mut long = vec![stmt(TAX, 0); 256];
        long[0] = i(JEQ_K, 254, 254, 0);
        long.push(stmt(RET_K, 1));
        assert_eq!(run(&long, &[]), 1);
        let p = [
            stmt(ST, 15),
            stmt(JA, 1),
            stmt(RET_K, 0),
            stmt(LD_B_ABS, KERNEL_OFFSETS - 1),
            stmt(LSH_K, 31),
            stmt(DIV_K, 1),
            stmt(RET_A, 0),
        ];
        let p = prog(&p);
        assert!(!p.is_empty());
        assert_eq!(p.insns().len(), 7);
        assert_eq!(p.run(&FRAME, 8), 0);
    }

    #[test]
    fn refusals_name_the_instruction() {
        let e = Program::new(vec![stmt(RET_K, 0), stmt(ST, 99), stmt(RET_K, 0)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "instruction 1 addresses a scratch memory word beyond the 16 there are"
        );
        let e = Program::new(vec![stmt(0xffff, 0)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "instruction 0 has opcode 0xffff, which is not a classic BPF instruction"
        );
    }

    #[test]
    fn unvalidated_programs_end_with_zero() {
        let run = |insns: &[Insn]| Program::unchecked(insns.to_vec()).run(&FRAME, 8);
        assert_eq!(run(&[]), 0);
        assert_eq!(run(&[stmt(LD_IMM, 1)]), 0);
        assert_eq!(run(&[stmt(0xffff, 0), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(LD_MEM, 16), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(ST, u32::MAX), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(JA, u32::MAX), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[i(JEQ_K, 9, 9, 0), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(DIV_K, 0), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(MOD_K, 0), stmt(RET_K, 1)]), 0);
        assert_eq!(run(&[stmt(LD_B_ABS, u32::MAX), stmt(RET_K, 1)]), 0);
        // Constant shifts the validator refuses give 0, like shifts by X.
        assert_eq!(run(&[stmt(LD_IMM, 1), stmt(LSH_K, 32), stmt(RET_A, 0)]), 0);
        assert_eq!(run(&[stmt(LD_IMM, 1), stmt(RSH_K, 40), stmt(RET_A, 0)]), 0);
    }

    /// Opcodes the interpreter knows (returns and loads twice, to end and branch more often).
    const OPCODES: [u16; 53] = [
        RET_K, RET_A, LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_W_IND, LD_H_IND, LD_B_IND, LD_W_LEN,
        LDX_W_LEN, LDX_B_MSH, LD_IMM, LDX_IMM, LD_MEM, LDX_MEM, ST, STX, JA, JEQ_K, JGT_K, JGE_K,
        JSET_K, JEQ_X, JGT_X, JGE_X, JSET_X, ADD_K, SUB_K, MUL_K, DIV_K, OR_K, AND_K, LSH_K, RSH_K,
        MOD_K, XOR_K, ADD_X, SUB_X, MUL_X, DIV_X, OR_X, AND_X, LSH_X, RSH_X, MOD_X, XOR_X, NEG,
        TAX, TXA, RET_K, RET_K, LD_B_ABS, LD_H_ABS,
    ];

    /// Instructions biased toward the edges: known opcodes, short jumps, small offsets and
    /// scratch indices, and constants near 0, 32, 2^32 and the kernel's offsets.
    fn insn() -> impl Strategy<Value = Insn> {
        let code = prop_oneof![9 => proptest::sample::select(&OPCODES[..]), 1 => any::<u16>()];
        let offset = prop_oneof![4 => 0u8..4, 1 => any::<u8>()];
        let k = prop_oneof![
            4 => 0u32..70,
            1 => 0xffdf_fff0u32..0xffe0_0010,
            1 => 0xffff_fff0u32..=u32::MAX,
            1 => any::<u32>(),
        ];
        (code, offset.clone(), offset, k).prop_map(|(code, jt, jf, k)| Insn { code, jt, jf, k })
    }

    /// Makes an instruction valid at index `at` of a program of `len`, keeping what it can of
    /// it, so that random programs get past validation often enough to run far.
    fn repair(mut insn: Insn, at: usize, len: usize) -> Insn {
        // Instructions after this one, which jumps may skip all but one of.
        let room = (len - at - 1).max(1);
        if !OPCODES.contains(&insn.code) {
            insn.code = OPCODES[usize::from(insn.code) % OPCODES.len()];
        }
        match insn.code {
            LD_MEM | LDX_MEM | ST | STX => insn.k %= MEMWORDS as u32,
            DIV_K | MOD_K => insn.k = insn.k.max(1),
            LSH_K | RSH_K => insn.k %= 32,
            LD_W_ABS | LD_H_ABS | LD_B_ABS | LD_W_IND | LD_H_IND | LD_B_IND | LDX_B_MSH
                if insn.k >= KERNEL_OFFSETS =>
            {
                insn.k -= KERNEL_OFFSETS;
            }
            JA => insn.k %= room as u32,
            JEQ_K | JGT_K | JGE_K | JSET_K | JEQ_X | JGT_X | JGE_X | JSET_X => {
                insn.jt = (usize::from(insn.jt) % room) as u8;
                insn.jf = (usize::from(insn.jf) % room) as u8;
            }
            _ => {}
        }
        insn
    }

    /// Programs of up to 64 instructions, nearly all of them repaired to be valid and most
    /// ending in a return, so that about half pass validation and the rest fail at one spot.
    fn program() -> impl Strategy<Value = Vec<Insn>> {
        let raw = proptest::collection::vec((insn(), proptest::bool::weighted(0.98)), 0..64);
        (raw, proptest::bool::weighted(0.9), any::<u32>()).prop_map(|(raw, ret, k)| {
            let mut insns: Vec<Insn> = raw.iter().map(|&(insn, _)| insn).collect();
            if ret {
                insns.push(stmt(RET_K, k));
            }
            let len = insns.len();
            for (at, &(insn, fix)) in raw.iter().enumerate() {
                if fix {
                    insns[at] = repair(insn, at, len);
                }
            }
            insns
        })
    }

    fn garbage() -> impl Strategy<Value = Vec<Insn>> {
        proptest::collection::vec(any::<u64>().prop_map(Insn::from_u64), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Validation refuses, or the program runs to an end without panicking.
        #[test]
        fn random_programs_are_refused_or_run(
            insns in program(),
            pkt in proptest::collection::vec(any::<u8>(), 0..80),
            wirelen in any::<u32>(),
        ) {
            match Program::new(insns.clone()) {
                Ok(p) => {
                    prop_assert_eq!(p.insns(), &insns[..]);
                    prop_assert_eq!(p.run(&pkt, wirelen) != 0, p.matches(&pkt, wirelen));
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// The interpreter survives programs that skipped validation, known opcodes or not.
        #[test]
        fn unvalidated_programs_run_without_panicking(
            biased in program(),
            random in garbage(),
            pkt in proptest::collection::vec(any::<u8>(), 0..80),
            wirelen in any::<u32>(),
        ) {
            let _ = Program::unchecked(biased).run(&pkt, wirelen);
            let _ = Program::unchecked(random).run(&pkt, wirelen);
        }
    }
}

/// The interpreter against libpcap itself: programs `pcap_compile` makes from tcpdump
/// expressions, run by both on frames from the corpus and made up here.
#[cfg(test)]
mod oracle {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    const CORPUS: &str = "/work/shared/corpus/pcaps";
    /// Frames taken from the start of each corpus file.
    const FRAMES_PER_FILE: usize = 2000;
    /// Corpus files read per link type (the largest ones).
    const FILES_PER_LINKTYPE: usize = 4;

    const ETHERNET: i32 = 1;
    const NULL: i32 = 0;
    /// `DLT_RAW`: files say `LINKTYPE_RAW` (101), which libpcap maps to this on Linux, and
    /// `pcap_open_dead` takes only the `DLT_` value.
    const RAW: i32 = 12;
    const LINUX_SLL: i32 = 113;

    /// (link type, optimize, expression).
    const EXPRESSIONS: &[(i32, bool, &str)] = &[
        (ETHERNET, true, "tcp port 80"),
        (ETHERNET, true, "host 192.168.1.1"),
        (ETHERNET, true, "net 10.0.0.0/8"),
        (ETHERNET, true, "src port 53 or dst port 53"),
        (
            ETHERNET,
            true,
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
        ),
        (ETHERNET, true, "ip6"),
        (ETHERNET, true, "vlan and tcp port 80"),
        (ETHERNET, true, "vlan 100"),
        (ETHERNET, true, "vlan and vlan and ip"),
        (ETHERNET, true, "not tcp port 22"),
        (ETHERNET, true, "ip[2:2] > 500"),
        (ETHERNET, true, "tcp[13] & 2 != 0"),
        (ETHERNET, true, "len > 100"),
        (ETHERNET, true, "greater 1000"),
        (ETHERNET, true, "less 64"),
        (ETHERNET, true, "ether host 00:11:22:33:44:55"),
        (ETHERNET, true, "ether broadcast or ether multicast"),
        (ETHERNET, true, "ether proto 0x88cc or arp"),
        (ETHERNET, true, "portrange 1000-2000"),
        (
            ETHERNET,
            true,
            "tcp dst portrange 0-1023 and not src net 192.168.0.0/16",
        ),
        (ETHERNET, true, "ip proto 17"),
        (ETHERNET, true, "udp and dst port 53"),
        (ETHERNET, true, "icmp"),
        (ETHERNET, true, "icmp[icmptype] == icmp-echo"),
        (ETHERNET, true, "icmp6 or (ip6 and tcp)"),
        (ETHERNET, true, "ip6 host ::1 or ip6 net fe80::/10"),
        (ETHERNET, true, "tcp and (port 443 or port 8443)"),
        (ETHERNET, true, "ip[6:2] & 0x1fff != 0"),
        (ETHERNET, true, "tcp[((tcp[12]&0xf0)>>2):4] = 0x47455420"),
        (
            ETHERNET,
            true,
            "tcp[tcpflags] & tcp-push != 0 and tcp[tcpflags] & tcp-ack != 0",
        ),
        // Arithmetic: every ALU operation with a constant and with X.
        (ETHERNET, true, "(ip[0] & 0xf) * 4 = 20"),
        (ETHERNET, true, "ip[2:2] / 4 > 100 and ip[2:2] % 7 = 3"),
        (ETHERNET, true, "(ip[8] ^ 0xff) > 100 or (ip[1] | 1) = 1"),
        (ETHERNET, true, "ip[2:2] - 40 > 0 and -ip[8] > 0xffffff80"),
        (ETHERNET, true, "ip[0] >> 4 = 4 and ip[9] << 2 > 20"),
        (ETHERNET, true, "ip[2:2] / ip[8] > 1"),
        (ETHERNET, true, "ip[2:2] % ip[9] = 0"),
        (
            ETHERNET,
            true,
            "(ip[2:2] << ip[9]) > 1000 or (ip[2:2] >> ip[15]) != 0",
        ),
        (
            ETHERNET,
            true,
            "ip[2:2] + ip[8] * ip[9] - ip[3] = 1000 or (ip[8] & ip[9] | ip[10] ^ ip[11]) = 3",
        ),
        (ETHERNET, false, "tcp port 80"),
        (ETHERNET, false, "vlan and tcp port 80"),
        (ETHERNET, false, "not tcp port 22"),
        (ETHERNET, false, "portrange 1000-2000"),
        (ETHERNET, false, "icmp6 or (ip6 and tcp)"),
        (ETHERNET, false, "tcp[((tcp[12]&0xf0)>>2):4] = 0x47455420"),
        (
            ETHERNET,
            false,
            "ip[2:2] / ip[8] > 1 or (ip[2:2] << ip[9]) > 1000",
        ),
        (LINUX_SLL, true, "tcp port 80"),
        (LINUX_SLL, true, "ip6"),
        (LINUX_SLL, true, "host 10.0.0.1 or net 192.168.0.0/16"),
        (LINUX_SLL, true, "tcp[tcpflags] & tcp-syn != 0"),
        (LINUX_SLL, true, "inbound and not udp"),
        (LINUX_SLL, false, "len > 90 and ip6 and tcp"),
        (NULL, true, "ip"),
        (NULL, true, "ip6"),
        (NULL, true, "tcp port 80"),
        (NULL, false, "udp or host 127.0.0.1"),
        (RAW, true, "tcp port 80"),
        (RAW, true, "ip6"),
        (RAW, true, "udp port 53"),
        (RAW, true, "net 10.0.0.0/8"),
        (RAW, false, "tcp[tcpflags] & tcp-syn != 0 or ip6 and tcp"),
    ];

    /// libpcap's program for `expr`, and the same instructions as ours.
    fn compile(linktype: i32, optimize: bool, expr: &str) -> (pcap::BpfProgram, Vec<Insn>) {
        let cap = pcap::Capture::dead(pcap::Linktype(linktype)).expect("pcap_open_dead");
        let theirs = cap
            .compile(expr, optimize)
            .unwrap_or_else(|e| panic!("libpcap cannot compile {expr:?}: {e}"));
        let ours = theirs
            .get_instructions()
            .iter()
            .map(|insn| {
                let text = insn.to_string();
                let f: Vec<u64> = text.split(' ').map(|f| f.parse().unwrap()).collect();
                let [code, jt, jf, k] = f[..] else {
                    panic!("unexpected instruction text {text:?}")
                };
                Insn::new(code as u16, jt as u8, jf as u8, k as u32)
            })
            .collect();
        (theirs, ours)
    }

    /// The first frames of the largest few corpus files of each link type.
    fn corpus_frames() -> Option<BTreeMap<i32, Vec<Vec<u8>>>> {
        let dir = Path::new(CORPUS);
        if !dir.is_dir() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the pcap corpus {CORPUS} is missing, and CI needs it"
            );
            eprintln!("note: {CORPUS} is missing; comparing on made-up frames only");
            return None;
        }
        let mut files: BTreeMap<i32, Vec<(u64, std::path::PathBuf)>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".pcap") || name.ends_with(".pcapng")) {
                continue;
            }
            let Ok(cap) = pcap::Capture::from_file(&path) else {
                continue;
            };
            let linktype = cap.get_datalink().0;
            if [ETHERNET, NULL, RAW, LINUX_SLL].contains(&linktype) {
                let size = std::fs::metadata(&path).unwrap().len();
                files.entry(linktype).or_default().push((size, path));
            }
        }
        let mut frames = BTreeMap::new();
        for (linktype, mut list) in files {
            // Largest first, name as a tie-break, so the choice does not depend on the
            // directory's order.
            list.sort_by(|a, b| b.cmp(a));
            let mut chosen: Vec<_> = list.iter().take(FILES_PER_LINKTYPE).collect();
            // And any file that advertises VLAN tags, for the `vlan` expressions.
            chosen.extend(
                list.iter()
                    .skip(FILES_PER_LINKTYPE)
                    .filter(|(_, p)| p.to_string_lossy().contains("vlan")),
            );
            let out: &mut Vec<Vec<u8>> = frames.entry(linktype).or_default();
            for (_, path) in chosen {
                let mut cap = pcap::Capture::from_file(path).unwrap();
                let mut n = 0;
                while n < FRAMES_PER_FILE {
                    match cap.next_packet() {
                        Ok(p) => out.push(p.data.to_vec()),
                        Err(pcap::Error::NoMorePackets) => break,
                        Err(e) => panic!("{}: {e}", path.display()),
                    }
                    n += 1;
                }
            }
        }
        Some(frames)
    }

    /// A small deterministic generator, so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], options: usize, l4: &[u8]) -> Vec<u8> {
        let hlen = 20 + options;
        let total = (hlen + l4.len()) as u16;
        let mut p = vec![0x40 | (hlen / 4) as u8, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.resize(hlen, 1);
        p.extend_from_slice(l4);
        p
    }

    fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// IP packets (IPv4 ethertype or IPv6 ethertype, bytes) that the expressions above pick
    /// apart in different ways.
    fn ip_packets() -> Vec<(u16, Vec<u8>)> {
        let a = [192, 168, 1, 1];
        let b = [10, 1, 2, 3];
        let lo6 = {
            let mut l = [0; 16];
            l[15] = 1;
            l
        };
        let ll6 = {
            let mut l = [0; 16];
            l[0] = 0xfe;
            l[1] = 0x80;
            l[15] = 7;
            l
        };
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut fragment = ipv4(6, a, b, 0, &tcp(1, 80, 2, &[]));
        fragment[6] = 0x20;
        fragment[7] = 0x10;
        let mut ttl_zero = ipv4(17, a, b, 0, &udp(53, 53, &[1; 600]));
        ttl_zero[8] = 0;
        let mut big_shift = ipv4(6, a, b, 0, &tcp(80, 1000, 0x18, get));
        big_shift[9] = 40;
        big_shift[15] = 33;
        vec![
            (0x0800, ipv4(6, a, b, 0, &tcp(40000, 80, 0x02, &[]))),
            (0x0800, ipv4(6, b, a, 0, &tcp(80, 40000, 0x12, &[]))),
            (0x0800, ipv4(6, a, b, 0, &tcp(40000, 80, 0x18, get))),
            (0x0800, ipv4(6, a, b, 8, &tcp(40000, 80, 0x18, get))),
            (0x0800, ipv4(6, a, b, 0, &tcp(1500, 22, 0x10, &[0; 700]))),
            (0x0800, ipv4(6, b, a, 0, &tcp(443, 1023, 0x11, &[]))),
            (0x0800, ipv4(17, a, b, 0, &udp(5353, 53, &[0; 40]))),
            (0x0800, ipv4(1, a, [255; 4], 0, &[8, 0, 0, 0, 0, 1, 0, 1])),
            (0x0800, ipv4(1, [127, 0, 0, 1], b, 0, &[0, 0, 0, 0])),
            (0x0800, fragment),
            (0x0800, ttl_zero),
            (0x0800, big_shift),
            (0x86dd, ipv6(6, lo6, ll6, &tcp(8443, 2000, 0x02, &[]))),
            (0x86dd, ipv6(6, ll6, lo6, &tcp(80, 1000, 0x18, get))),
            (0x86dd, ipv6(58, ll6, lo6, &[128, 0, 0, 0, 0, 1, 0, 1])),
            (0x86dd, ipv6(17, lo6, lo6, &udp(53, 1999, &[0; 20]))),
            // A fragment header before TCP.
            (
                0x86dd,
                ipv6(44, lo6, ll6, &[6, 0, 0, 0, 0, 0, 0, 1, 0, 80, 0, 22, 0, 0]),
            ),
        ]
    }

    /// Frames of `linktype` made up around `ip_packets`: VLAN tags, the address families the
    /// null header may carry, both byte orders, and others that no expression wants.
    fn synthetic_frames(linktype: i32, rng: &mut XorShift) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for (ethertype, ip) in ip_packets() {
            let mut wrapped = Vec::new();
            match linktype {
                ETHERNET => {
                    let macs = [
                        [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x02, 0, 0, 0, 0, 1],
                        [
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                        ],
                        [0x01, 0x00, 0x5e, 0, 0, 1, 0x02, 0, 0, 0, 0, 2],
                    ];
                    for (n, mac) in macs.iter().enumerate() {
                        let mut tags: Vec<&[u8]> = vec![&[]];
                        if n == 0 {
                            // One 802.1Q tag (VLAN 100, then 5) and QinQ 802.1ad over 802.1Q.
                            tags.push(&[0x81, 0x00, 0x00, 0x64]);
                            tags.push(&[0x81, 0x00, 0x20, 0x05]);
                            tags.push(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x05]);
                            tags.push(&[0x91, 0x00, 0x00, 0x64]);
                        }
                        for tag in tags {
                            let mut f = mac.to_vec();
                            f.extend_from_slice(tag);
                            f.extend_from_slice(&ethertype.to_be_bytes());
                            f.extend_from_slice(&ip);
                            wrapped.push(f);
                        }
                    }
                }
                LINUX_SLL => {
                    for packet_type in [0u16, 4] {
                        let mut f = packet_type.to_be_bytes().to_vec();
                        f.extend_from_slice(&[0, 1, 0, 6, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0]);
                        f.extend_from_slice(&ethertype.to_be_bytes());
                        f.extend_from_slice(&ip);
                        wrapped.push(f);
                    }
                }
                NULL => {
                    // AF_INET, and AF_INET6 as Linux, the BSDs and macOS number it.
                    let families: &[u32] = if ethertype == 0x0800 {
                        &[2]
                    } else {
                        &[10, 24, 28, 30]
                    };
                    for &family in families {
                        for header in [family.to_le_bytes(), family.to_be_bytes()] {
                            let mut f = header.to_vec();
                            f.extend_from_slice(&ip);
                            wrapped.push(f);
                        }
                    }
                }
                RAW => wrapped.push(ip.clone()),
                _ => unreachable!(),
            }
            for f in wrapped {
                // Every truncation of the headers, then a few random byte flips.
                for len in 0..f.len().min(80) {
                    frames.push(f[..len].to_vec());
                }
                for _ in 0..8 {
                    let mut m = f.clone();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(m.len().min(70));
                        m[at] ^= 1 << rng.below(8);
                    }
                    frames.push(m);
                }
                frames.push(f);
            }
        }
        // Random bytes of random lengths, including none at all, and ARP and LLDP frames.
        for _ in 0..300 {
            let len = rng.below(200);
            frames.push((0..len).map(|_| rng.next() as u8).collect());
        }
        if linktype == ETHERNET {
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
            arp.extend_from_slice(&[0; 28]);
            frames.push(arp);
            let mut lldp = vec![
                0x01, 0x80, 0xc2, 0, 0, 0x0e, 0x02, 0, 0, 0, 0, 1, 0x88, 0xcc,
            ];
            lldp.extend_from_slice(&[0; 40]);
            frames.push(lldp);
        }
        frames
    }

    #[test]
    fn agrees_with_libpcap() {
        let corpus = corpus_frames();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut frames: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        for linktype in [ETHERNET, LINUX_SLL, NULL, RAW] {
            let mut list = synthetic_frames(linktype, &mut rng);
            if let Some(corpus) = &corpus {
                let real = corpus.get(&linktype).map_or(&[][..], |v| &v[..]);
                assert!(!real.is_empty(), "no corpus frames of link type {linktype}");
                list.extend_from_slice(real);
            }
            frames.insert(linktype, list);
        }

        let mut pairs = 0usize;
        let mut accepted = 0usize;
        for &(linktype, optimize, expr) in EXPRESSIONS {
            let (theirs, insns) = compile(linktype, optimize, expr);
            let program = Program::new(insns.clone())
                .unwrap_or_else(|e| panic!("{expr:?} (optimize {optimize}): {e}; {insns:?}"));
            // libpcap's programs return either 0 or one snap length, and never `A`, so
            // agreeing on accept/reject is agreeing on the return value too.
            let keep: Vec<u32> = insns
                .iter()
                .filter(|i| i.code == RET_K && i.k != 0)
                .map(|i| i.k)
                .collect();
            assert!(insns.iter().all(|i| i.code != RET_A), "{expr:?} returns A");
            assert!(keep.windows(2).all(|w| w[0] == w[1]), "{expr:?}: {keep:?}");
            let mut hits = 0usize;
            for frame in &frames[&linktype] {
                let ours = program.run(frame, frame.len() as u32);
                let want = theirs.filter(frame);
                assert_eq!(
                    ours != 0,
                    want,
                    "{expr:?} (link type {linktype}, optimize {optimize}) on {frame:02x?}"
                );
                if ours != 0 {
                    assert_eq!(ours, keep[0], "{expr:?}");
                    hits += 1;
                }
                pairs += 1;
            }
            accepted += hits;
            eprintln!(
                "{expr:?} (link type {linktype}, optimize {optimize}): {} instructions, {hits} of {} frames",
                insns.len(),
                frames[&linktype].len()
            );
        }
        let frames: usize = frames.values().map(Vec::len).sum();
        eprintln!(
            "compared {pairs} (expression, frame) pairs: {} expressions, {frames} frames, {accepted} accepted",
            EXPRESSIONS.len()
        );
        assert!(accepted > 0 && accepted < pairs);
    }

    /// The corners where a C shift is undefined, or a program could go on with a made-up `A`:
    /// shifts by `X >= 32` give 0 and division by `X == 0` rejects, in libpcap as here.
    #[test]
    fn agrees_on_large_shifts_and_division_by_zero() {
        let exprs = [
            "(ip[2:2] << ip[9]) != 0",
            "(ip[2:2] >> ip[9]) != 0",
            "ip[2:2] / ip[8] = 0",
            "ip[2:2] % ip[8] = 0",
        ];
        for expr in exprs {
            let (theirs, insns) = compile(RAW, true, expr);
            let ours = Program::new(insns).unwrap();
            for v in [0u8, 1, 15, 16, 31, 32, 33, 40, 64, 255] {
                let mut p = ipv4(6, [1; 4], [2; 4], 0, &tcp(1, 2, 2, &[]));
                // An odd length, so that no shift below 32 in either direction clears it all.
                p[2..4].copy_from_slice(&0x8001u16.to_be_bytes());
                p[8] = v;
                p[9] = v;
                let want = theirs.filter(&p);
                assert_eq!(ours.matches(&p, p.len() as u32), want, "{expr:?} with {v}");
                if v >= 32 && expr.contains('<') {
                    assert!(!want, "libpcap shifts {expr:?} by {v} to nonzero");
                }
                if v == 0 && expr.contains(['/', '%']) {
                    assert!(!want, "libpcap accepts {expr:?} with a zero divisor");
                }
            }
        }
    }

    /// `protochain` loops with a backward jump, which this validator refuses.
    #[test]
    fn protochain_is_refused() {
        let (_, insns) = compile(ETHERNET, true, "ip6 protochain 6");
        assert!(matches!(
            Program::new(insns),
            Err(Invalid::JumpOutOfRange { .. })
        ));
    }
}
