//! `mos-grep`: many patterns over reassembled streams (being written).
