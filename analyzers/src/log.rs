//! `mos-log`: connections and protocol records (being written).
