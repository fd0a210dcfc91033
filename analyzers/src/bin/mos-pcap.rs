fn main() {
    eprintln!("mos-pcap: being written");
    std::process::exit(1);
}
