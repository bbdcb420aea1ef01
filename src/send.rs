//! `meterd send`: sends statsd lines over UDP, for people and scripts.

use std::io::BufRead;
use std::net::UdpSocket;

use anyhow::{Context, Result};

/// Largest datagram `send` builds when packing several lines (fits a 1500-byte MTU).
const PACK_BYTES: usize = 1432;

/// Sends `lines` (or stdin's lines when the only argument is `-`) to `to`, packing several lines
/// per datagram. Returns the number of lines sent.
pub fn send(lines: &[String], to: &str) -> Result<usize> {
    let socket = UdpSocket::bind(if to.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .context("cannot open a UDP socket")?;
    socket
        .connect(to)
        .with_context(|| format!("cannot resolve or reach {to}"))?;
    let mut packet = Vec::with_capacity(PACK_BYTES);
    let mut sent = 0;
    let mut push = |line: &str, packet: &mut Vec<u8>| -> Result<()> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(());
        }
        if !packet.is_empty() && packet.len() + 1 + line.len() > PACK_BYTES {
            socket
                .send(packet)
                .with_context(|| format!("cannot send to {to}"))?;
            packet.clear();
        }
        if !packet.is_empty() {
            packet.push(b'\n');
        }
        packet.extend_from_slice(line.as_bytes());
        sent += 1;
        Ok(())
    };
    if lines.len() == 1 && lines.first().is_some_and(|l| l == "-") {
        for line in std::io::stdin().lock().lines() {
            push(&line.context("cannot read stdin")?, &mut packet)?;
        }
    } else {
        for line in lines {
            push(line, &mut packet)?;
        }
    }
    if !packet.is_empty() {
        socket
            .send(&packet)
            .with_context(|| format!("cannot send to {to}"))?;
    }
    Ok(sent)
}
