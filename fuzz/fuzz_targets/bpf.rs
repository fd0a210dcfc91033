//! The sensor's filter programs, which analyzers send it: the input is a program (8 bytes an
//! instruction, as on the control socket) and a frame. Whatever the program, validation either
//! refuses it or the interpreter runs it to a return; unvalidated, the interpreter must not
//! panic either (it is the second line of defence). A validated program runs in at most as
//! many steps as it has instructions, which the fuzzer's timeout would catch if it looped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::filter::{Insn, Program};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte says how many instructions the program has; the rest is the frame.
    let n = usize::from(data[0]).min((data.len() - 1) / 8);
    let (prog, frame) = data[1..].split_at(n * 8);
    let insns: Vec<Insn> = prog
        .chunks_exact(8)
        .map(|c| Insn::from_u64(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
        .collect();
    if let Ok(p) = Program::new(insns.clone()) {
        let _ = p.run(frame, frame.len() as u32);
        let _ = p.run(frame, u32::MAX);
        let _ = p.run(&[], 0);
    }
    let _ = Program::run_unvalidated(&insns, frame, frame.len() as u32);
});
