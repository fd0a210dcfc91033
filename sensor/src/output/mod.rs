//! What leaves the core: the in-process stream dump (`mos-sensor --dump`).
