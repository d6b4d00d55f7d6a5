//! Just enough of the Redis protocol (RESP2) to ask a server PING, INFO and
//! CLUSTER INFO while xtask waits for it, without depending on redis-cli.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One reply, for the reply types the readiness checks use.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`-style status line.
    Status(String),
    /// `-ERR ...` error line.
    Error(String),
    /// `:42` integer.
    Integer(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
}

impl Reply {
    /// The reply as text; an error reply becomes an `io::Error` carrying its message.
    pub fn into_text(self) -> io::Result<String> {
        match self {
            Reply::Status(text) => Ok(text),
            Reply::Integer(value) => Ok(value.to_string()),
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Reply::Bulk(None) => Ok(String::new()),
            Reply::Error(message) => Err(io::Error::other(message)),
        }
    }
}

/// Sends one command to `address` on a fresh connection and reads its reply.
pub fn request(address: SocketAddr, args: &[&str], timeout: Duration) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&encode(args))?;
    read_reply(&mut BufReader::new(stream))
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line
        .strip_suffix("\r\n")
        .ok_or_else(|| invalid(format!("truncated reply line {line:?}")))?;
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| invalid(format!("bad integer reply {rest:?}"))),
        "$" => {
            let length: i64 = rest
                .parse()
                .map_err(|_| invalid(format!("bad bulk length {rest:?}")))?;
            let Ok(length) = usize::try_from(length) else {
                return Ok(Reply::Bulk(None));
            };
            let mut bytes = vec![0; length + 2];
            reader.read_exact(&mut bytes)?;
            bytes.truncate(length);
            Ok(Reply::Bulk(Some(bytes)))
        }
        _ => Err(invalid(format!("unsupported reply {line:?}"))),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The value of `field` in an INFO-style `field:value` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut io::Cursor::new(bytes))
    }

    #[test]
    fn commands_are_encoded_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["CLUSTER", "INFO"]),
            b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n"
        );
    }

    #[test]
    fn replies_of_each_supported_type_parse() {
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Reply::Status("PONG".into()));
        assert_eq!(
            parse(b"-ERR no\r\n").unwrap(),
            Reply::Error("ERR no".into())
        );
        assert_eq!(parse(b":7\r\n").unwrap(), Reply::Integer(7));
        assert_eq!(
            parse(b"$5\r\na\r\nbc\r\n").unwrap(),
            Reply::Bulk(Some(b"a\r\nbc".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
    }

    #[test]
    fn truncated_or_unknown_replies_are_errors() {
        assert!(parse(b"+PON").is_err());
        assert!(parse(b"*1\r\n").is_err());
        assert!(parse(b"$10\r\nshort\r\n").is_err());
    }

    #[test]
    fn loading_error_reply_becomes_an_error() {
        let error = Reply::Error("LOADING".into()).into_text().unwrap_err();
        assert_eq!(error.to_string(), "LOADING");
    }

    #[test]
    fn info_fields_are_found_by_exact_name() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_known_nodes:3\r\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_known_nodes"), Some("3"));
        assert_eq!(info_field(info, "cluster"), None);
    }
}
