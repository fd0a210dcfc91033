fn main() {
    eprintln!("mos-log: being written");
    std::process::exit(1);
}
