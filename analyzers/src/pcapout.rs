//! `mos-pcap`: pcap and pcapng files (being written).
