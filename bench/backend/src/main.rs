//! The benchmarks' backend: answers every request with a fixed 13-byte body,
//! HTTP/1.1 keep-alive, one thread per connection, std only (so it can be
//! linked statically and copied into any app image).
//!
//! Usage: `bench-backend tcp PORT` or `bench-backend unix PATH`.
#![allow(clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read, Write};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n";

fn serve<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut close = false;
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        if length > 0 {
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let stream = reader.get_mut();
        if stream.write_all(RESPONSE).is_err() || stream.flush().is_err() || close {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("tcp"), Some(port)) => {
            let listener = std::net::TcpListener::bind(("0.0.0.0", port.parse().unwrap_or(8888)))
                .unwrap_or_else(|e| panic!("bind: {e}"));
            for stream in listener.incoming().flatten() {
                let _ = stream.set_nodelay(true);
                std::thread::spawn(move || serve(stream));
            }
        }
        (Some("unix"), Some(path)) => {
            let _ = std::fs::remove_file(path);
            let listener = std::os::unix::net::UnixListener::bind(path)
                .unwrap_or_else(|e| panic!("bind: {e}"));
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        }
        _ => {
            eprintln!("usage: bench-backend tcp PORT | unix PATH");
            std::process::exit(2);
        }
    }
}
