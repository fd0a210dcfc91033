fn main() {
    eprintln!("mos-grep: being written");
    std::process::exit(1);
}
