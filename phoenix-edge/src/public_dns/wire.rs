//! The DNS messages the public view needs, on the wire: a zone transfer (AXFR, RFC 5936) and a dynamic
//! update (RFC 2136), both over TCP and signed with TSIG (RFC 8945, HMAC-SHA-2 through `ring`).
//!
//! Outgoing names are never compressed; incoming ones may be. Only A, AAAA and TXT data are decoded:
//! everything else in a zone is counted, never changed.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_AAAA: u16 = 28;
const TYPE_TSIG: u16 = 250;
const TYPE_AXFR: u16 = 252;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_NONE: u16 = 254;
const CLASS_ANY: u16 = 255;
const OPCODE_UPDATE: u16 = 5 << 11;
/// How far the server's clock may be from ours, in seconds (RFC 8945's recommendation).
const FUDGE: u16 = 300;

/// A TSIG key: its name, algorithm and secret. The secret is never printed.
#[derive(Clone)]
pub struct TsigKey {
    name: String,
    algorithm: Algorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TsigKey({}, {}, <redacted>)", self.name, self.algorithm.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "hmac-sha256",
            Algorithm::Sha384 => "hmac-sha384",
            Algorithm::Sha512 => "hmac-sha512",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha384 => hmac::HMAC_SHA384,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

impl TsigKey {
    /// The key `name` with `algorithm` (`hmac-sha256`, ...) and its base64 `secret`.
    pub fn new(name: &str, algorithm: &str, secret: &str) -> Result<TsigKey, String> {
        use base64::Engine as _;
        let algorithm = match algorithm.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Algorithm::Sha256,
            "hmac-sha384" => Algorithm::Sha384,
            "hmac-sha512" => Algorithm::Sha512,
            other => return Err(format!("TSIG algorithm `{other}` is not one Phoenix signs with")),
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| format!("the secret of TSIG key `{name}` is not base64"))?;
        Ok(TsigKey {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            algorithm,
            secret,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(self.algorithm.ring(), &self.secret);
        hmac::sign(&key, data).as_ref().to_vec()
    }

    fn verify(&self, data: &[u8], mac: &[u8]) -> bool {
        let key = hmac::Key::new(self.algorithm.ring(), &self.secret);
        hmac::verify(&key, data, mac).is_ok()
    }
}

/// A record of a zone, as transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Lower case, without the trailing dot.
    pub name: String,
    /// Its type.
    pub rtype: u16,
    /// Its TTL.
    pub ttl: u32,
    /// Its data, decoded for A, AAAA and TXT.
    pub data: Data,
}

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// TXT strings, joined.
    Txt(String),
    /// Anything else, not decoded.
    Other,
}

/// A failure talking to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Connecting, sending or receiving failed.
    Io(String),
    /// The server answered with an error code (and, for TSIG failures, the TSIG error).
    Refused {
        /// What the server said, in words.
        message: String,
        /// The response code.
        rcode: u16,
    },
    /// The answer could not be read, or its signature did not verify.
    Malformed(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(message) | WireError::Malformed(message) => f.write_str(message),
            WireError::Refused { message, .. } => f.write_str(message),
        }
    }
}

/// Response codes whose refusal means the zone changed under a prerequisite.
pub(crate) const PREREQUISITE_FAILED: [u16; 4] = [6, 7, 8, 3];

fn rcode_words(rcode: u16) -> &'static str {
    match rcode {
        1 => "FORMERR: the server could not read the request",
        2 => "SERVFAIL: the server failed",
        3 => "NXDOMAIN: a name that must exist does not",
        4 => "NOTIMP: the server does not implement this",
        5 => {
            "REFUSED: the server's policy refuses this (is the key allowed to update or transfer this zone?)"
        }
        6 => "YXDOMAIN: a name that must not exist does",
        7 => "YXRRSET: a record set that must not exist does",
        8 => "NXRRSET: a record set that must exist does not",
        9 => "NOTAUTH: the server is not authoritative for the zone, or refused the key",
        10 => "NOTZONE: a name is outside the zone",
        16 => "BADSIG: the server refused the TSIG signature (is the secret right?)",
        17 => "BADKEY: the server does not know the TSIG key (is its name and algorithm right?)",
        18 => "BADTIME: the server's clock and this machine's differ by more than five minutes",
        _ => "an error the server gave a code Phoenix does not know",
    }
}

/// One entry of an update: a record to add, a record set or record to delete, or a prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    name: String,
    rtype: u16,
    class: u16,
    ttl: u32,
    data: Vec<u8>,
}

impl Entry {
    /// Adds the record.
    pub fn add(name: &str, ttl: u32, data: &Data) -> Entry {
        let (rtype, data) = encode_data(data);
        Entry {
            name: name.to_owned(),
            rtype,
            class: CLASS_IN,
            ttl,
            data,
        }
    }

    /// Deletes every record of `rtype` at `name`.
    pub fn delete_set(name: &str, rtype: u16) -> Entry {
        Entry {
            name: name.to_owned(),
            rtype,
            class: CLASS_ANY,
            ttl: 0,
            data: Vec::new(),
        }
    }

    /// Deletes one record.
    pub fn delete(name: &str, data: &Data) -> Entry {
        let (rtype, data) = encode_data(data);
        Entry {
            name: name.to_owned(),
            rtype,
            class: CLASS_NONE,
            ttl: 0,
            data,
        }
    }

    /// Prerequisite: nothing is at `name`.
    pub fn absent(name: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            rtype: TYPE_ANY,
            class: CLASS_NONE,
            ttl: 0,
            data: Vec::new(),
        }
    }

    /// Prerequisite: no record of `rtype` is at `name`.
    pub fn absent_set(name: &str, rtype: u16) -> Entry {
        Entry {
            name: name.to_owned(),
            rtype,
            class: CLASS_NONE,
            ttl: 0,
            data: Vec::new(),
        }
    }

    /// Prerequisite: the record set of this record's type at `name` is exactly this record.
    pub fn exactly(name: &str, data: &Data) -> Entry {
        let (rtype, data) = encode_data(data);
        Entry {
            name: name.to_owned(),
            rtype,
            class: CLASS_IN,
            ttl: 0,
            data,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_name(out, &self.name);
        out.extend_from_slice(&self.rtype.to_be_bytes());
        out.extend_from_slice(&self.class.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.data);
    }
}

fn encode_data(data: &Data) -> (u16, Vec<u8>) {
    match data {
        Data::A(address) => (TYPE_A, address.octets().to_vec()),
        Data::Aaaa(address) => (TYPE_AAAA, address.octets().to_vec()),
        Data::Txt(text) => {
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
            if text.is_empty() {
                out.push(0);
            }
            (TYPE_TXT, out)
        }
        Data::Other => (TYPE_ANY, Vec::new()),
    }
}

/// An authoritative server, reached over TCP, with the key its requests are signed with.
#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port`, for connecting and for messages.
    pub address: String,
    /// The key; `None` sends unsigned requests.
    pub key: Option<TsigKey>,
    /// How long one exchange may take.
    pub timeout: Duration,
}

impl Server {
    /// Every record of `zone`, by zone transfer; the closing SOA record is left out.
    pub async fn transfer(&self, zone: &str) -> Result<Vec<Record>, WireError> {
        let id = message_id();
        let mut request = header(id, 0, 1, 0, 0, 0);
        write_name(&mut request, zone);
        request.extend_from_slice(&TYPE_AXFR.to_be_bytes());
        request.extend_from_slice(&CLASS_IN.to_be_bytes());
        let request_mac = self.sign(&mut request, id);
        let mut stream = self.connect().await?;
        self.send(&mut stream, &request).await?;
        let mut records = Vec::new();
        let mut soas = 0;
        let mut chain = Chain::new(request_mac);
        loop {
            let bytes = self.receive(&mut stream).await?;
            let message = Message::parse(&bytes)?;
            if message.id != id {
                return Err(WireError::Malformed(format!(
                    "{} answered a transfer of {zone} with another message's id",
                    self.address
                )));
            }
            self.check(
                &message,
                &bytes,
                &mut chain,
                &format!("a transfer of zone {zone}"),
            )?;
            for record in message.records {
                if record.rtype == TYPE_SOA {
                    soas += 1;
                    if soas == 2 {
                        break;
                    }
                }
                if soas == 0 {
                    return Err(WireError::Malformed(format!(
                        "{}'s transfer of {zone} does not start with its SOA record",
                        self.address
                    )));
                }
                records.push(record);
            }
            if soas >= 2 {
                break;
            }
        }
        if self.key.is_some() && !chain.last_signed {
            return Err(WireError::Malformed(format!(
                "the last message of {}'s transfer of {zone} is not signed",
                self.address
            )));
        }
        Ok(records)
    }

    /// Sends one update of `zone`: `prerequisites` must hold, then every entry of `updates` is applied, or
    /// none is.
    pub async fn update(
        &self,
        zone: &str,
        prerequisites: &[Entry],
        updates: &[Entry],
    ) -> Result<(), WireError> {
        let id = message_id();
        let mut request = header(
            id,
            OPCODE_UPDATE,
            1,
            prerequisites.len() as u16,
            updates.len() as u16,
            0,
        );
        write_name(&mut request, zone);
        request.extend_from_slice(&TYPE_SOA.to_be_bytes());
        request.extend_from_slice(&CLASS_IN.to_be_bytes());
        for entry in prerequisites.iter().chain(updates) {
            entry.write(&mut request);
        }
        let request_mac = self.sign(&mut request, id);
        let mut stream = self.connect().await?;
        self.send(&mut stream, &request).await?;
        let bytes = self.receive(&mut stream).await?;
        let message = Message::parse(&bytes)?;
        if message.id != id {
            return Err(WireError::Malformed(format!(
                "{} answered an update of {zone} with another message's id",
                self.address
            )));
        }
        let mut chain = Chain::new(request_mac);
        self.check(&message, &bytes, &mut chain, &format!("an update of zone {zone}"))
    }

    /// Appends the TSIG record to `message`; the MAC, which the response's signature covers.
    fn sign(&self, message: &mut Vec<u8>, id: u16) -> Vec<u8> {
        let Some(key) = &self.key else {
            return Vec::new();
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or_default();
        let mut signed = message.clone();
        signed.extend_from_slice(&variables(key, time, 0));
        let mac = key.mac(&signed);
        let mut rdata = Vec::new();
        write_name(&mut rdata, key.algorithm.name());
        rdata.extend_from_slice(&time.to_be_bytes()[2..]);
        rdata.extend_from_slice(&FUDGE.to_be_bytes());
        rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&id.to_be_bytes());
        rdata.extend_from_slice(&0u16.to_be_bytes());
        rdata.extend_from_slice(&0u16.to_be_bytes());
        write_name(message, &key.name);
        message.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        message.extend_from_slice(&CLASS_ANY.to_be_bytes());
        message.extend_from_slice(&0u32.to_be_bytes());
        message.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        message.extend_from_slice(&rdata);
        let count = u16::from_be_bytes([message[10], message[11]]) + 1;
        message[10..12].copy_from_slice(&count.to_be_bytes());
        mac
    }

    /// The response's code and signature: an error in words, or `Ok` when it says success and, with a key,
    /// is signed by it.
    fn check(&self, message: &Message, bytes: &[u8], chain: &mut Chain, what: &str) -> Result<(), WireError> {
        let tsig_error = message.tsig.as_ref().map_or(0, |tsig| tsig.error);
        let rcode = if tsig_error != 0 {
            tsig_error
        } else {
            message.rcode
        };
        if rcode != 0 {
            return Err(WireError::Refused {
                message: format!("{} refused {what}: {}", self.address, rcode_words(rcode)),
                rcode,
            });
        }
        let Some(key) = &self.key else {
            return Ok(());
        };
        let Some(tsig) = &message.tsig else {
            if chain.first {
                return Err(WireError::Malformed(format!(
                    "{}'s answer to {what} is not signed, though the request was",
                    self.address
                )));
            }
            // Between signed messages of a transfer (RFC 8945, 5.3.1): covered by the next signature.
            chain.unsigned.extend_from_slice(bytes);
            chain.last_signed = false;
            return Ok(());
        };
        let mut data = Vec::new();
        data.extend_from_slice(&(chain.prior_mac.len() as u16).to_be_bytes());
        data.extend_from_slice(&chain.prior_mac);
        data.extend_from_slice(&chain.unsigned);
        data.extend_from_slice(&stripped(bytes, tsig));
        if chain.first {
            data.extend_from_slice(&variables(key, tsig.time, tsig.error));
        } else {
            data.extend_from_slice(&tsig.time.to_be_bytes()[2..]);
            data.extend_from_slice(&tsig.fudge.to_be_bytes());
        }
        if tsig.key != key.name || !key.verify(&data, &tsig.mac) {
            return Err(WireError::Malformed(format!(
                "the signature of {}'s answer to {what} does not verify with key `{}`",
                self.address, key.name
            )));
        }
        chain.prior_mac = tsig.mac.clone();
        chain.unsigned.clear();
        chain.first = false;
        chain.last_signed = true;
        Ok(())
    }

    async fn connect(&self) -> Result<TcpStream, WireError> {
        let connect = TcpStream::connect(&self.address);
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(WireError::Io(format!("cannot reach {}: {error}", self.address))),
            Err(_) => Err(WireError::Io(format!(
                "{} did not accept a connection within {} s",
                self.address,
                self.timeout.as_secs()
            ))),
        }
    }

    async fn send(&self, stream: &mut TcpStream, message: &[u8]) -> Result<(), WireError> {
        let mut framed = (message.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(message);
        let write = stream.write_all(&framed);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(WireError::Io(format!("sending to {}: {error}", self.address))),
            Err(_) => Err(WireError::Io(format!(
                "{} did not take the request in time",
                self.address
            ))),
        }
    }

    async fn receive(&self, stream: &mut TcpStream) -> Result<Vec<u8>, WireError> {
        let read = async {
            let mut length = [0u8; 2];
            stream.read_exact(&mut length).await?;
            let mut message = vec![0u8; u16::from_be_bytes(length) as usize];
            stream.read_exact(&mut message).await?;
            Ok::<_, std::io::Error>(message)
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(error)) => Err(WireError::Io(format!(
                "reading {}'s answer: {error}",
                self.address
            ))),
            Err(_) => Err(WireError::Io(format!(
                "{} did not answer within {} s",
                self.address,
                self.timeout.as_secs()
            ))),
        }
    }
}

/// What the signatures of a response, or of a transfer's run of responses, are chained to.
struct Chain {
    prior_mac: Vec<u8>,
    unsigned: Vec<u8>,
    first: bool,
    last_signed: bool,
}

impl Chain {
    fn new(request_mac: Vec<u8>) -> Chain {
        Chain {
            prior_mac: request_mac,
            unsigned: Vec::new(),
            first: true,
            last_signed: false,
        }
    }
}

/// The TSIG variables a MAC covers after the message.
fn variables(key: &TsigKey, time: u64, error: u16) -> Vec<u8> {
    let mut out = Vec::new();
    write_name(&mut out, &key.name);
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    write_name(&mut out, key.algorithm.name());
    out.extend_from_slice(&time.to_be_bytes()[2..]);
    out.extend_from_slice(&FUDGE.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}

/// The message as it was before its TSIG record was added: without it, one fewer additional record, and
/// the original id.
fn stripped(bytes: &[u8], tsig: &Tsig) -> Vec<u8> {
    let mut out = bytes[..tsig.offset].to_vec();
    out[0..2].copy_from_slice(&tsig.original_id.to_be_bytes());
    let count = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
    out[10..12].copy_from_slice(&count.to_be_bytes());
    out
}

fn message_id() -> u16 {
    let mut id = [0u8; 2];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).is_err() {
        return 0x5048;
    }
    u16::from_be_bytes(id)
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect()
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|label| !label.is_empty())
    {
        let label = label.to_ascii_lowercase();
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
}

/// A response, as far as Phoenix reads one.
#[derive(Debug)]
struct Message {
    id: u16,
    rcode: u16,
    /// The answer section's records (a transfer's records).
    records: Vec<Record>,
    tsig: Option<Tsig>,
}

/// The TSIG record of a response.
#[derive(Debug)]
struct Tsig {
    /// Where the record starts in the message.
    offset: usize,
    key: String,
    time: u64,
    fudge: u16,
    mac: Vec<u8>,
    original_id: u16,
    error: u16,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], WireError> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| WireError::Malformed("a DNS message ends early".to_owned()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A name, following compression pointers.
    fn name(&mut self) -> Result<String, WireError> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut resume = None;
        let malformed = || WireError::Malformed("a DNS name is malformed".to_owned());
        for _ in 0..128 {
            let length = *self.bytes.get(at).ok_or_else(malformed)? as usize;
            if length == 0 {
                self.at = resume.unwrap_or(at + 1);
                return Ok(labels.join("."));
            }
            if length & 0xc0 == 0xc0 {
                let low = *self.bytes.get(at + 1).ok_or_else(malformed)? as usize;
                resume.get_or_insert(at + 2);
                at = ((length & 0x3f) << 8) | low;
                continue;
            }
            let label = self.bytes.get(at + 1..at + 1 + length).ok_or_else(malformed)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            at += 1 + length;
        }
        Err(malformed())
    }
}

impl Message {
    fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        let mut reader = Reader { bytes, at: 0 };
        let id = reader.u16()?;
        let flags = reader.u16()?;
        let counts = [reader.u16()?, reader.u16()?, reader.u16()?, reader.u16()?];
        for _ in 0..counts[0] {
            reader.name()?;
            reader.take(4)?;
        }
        let mut records = Vec::new();
        let mut tsig = None;
        let total = counts[1] as usize + counts[2] as usize + counts[3] as usize;
        for index in 0..total {
            let offset = reader.at;
            let name = reader.name()?;
            let rtype = reader.u16()?;
            let _class = reader.u16()?;
            let ttl = reader.u32()?;
            let length = reader.u16()? as usize;
            let start = reader.at;
            let data = reader.take(length)?;
            if rtype == TYPE_TSIG {
                let mut inner = Reader { bytes, at: start };
                let _algorithm = inner.name()?;
                let time = inner.take(6)?;
                let time = time.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
                let fudge = inner.u16()?;
                let mac_length = inner.u16()? as usize;
                let mac = inner.take(mac_length)?.to_vec();
                let original_id = inner.u16()?;
                let error = inner.u16()?;
                tsig = Some(Tsig {
                    offset,
                    key: name,
                    time,
                    fudge,
                    mac,
                    original_id,
                    error,
                });
                continue;
            }
            if index >= counts[1] as usize {
                continue;
            }
            let data = match rtype {
                TYPE_A if length == 4 => Data::A(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                TYPE_AAAA if length == 16 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(data);
                    Data::Aaaa(Ipv6Addr::from(octets))
                }
                TYPE_TXT => {
                    let mut text = Vec::new();
                    let mut rest = data;
                    while let Some((&size, tail)) = rest.split_first() {
                        let size = (size as usize).min(tail.len());
                        text.extend_from_slice(&tail[..size]);
                        rest = &tail[size..];
                    }
                    Data::Txt(String::from_utf8_lossy(&text).into_owned())
                }
                _ => Data::Other,
            };
            records.push(Record {
                name,
                rtype,
                ttl,
                data,
            });
        }
        Ok(Message {
            id,
            rcode: flags & 0x000f,
            records,
            tsig,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TsigKey {
        TsigKey::new(
            "Phoenix-Key.",
            "hmac-sha256",
            "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==",
        )
        .unwrap()
    }

    /// A response as a server signs it: `records` in the answer section, signed after `request_mac`.
    fn response(id: u16, records: &[Entry], key: &TsigKey, request_mac: &[u8]) -> Vec<u8> {
        let mut message = header(id, 0x8000, 0, records.len() as u16, 0, 0);
        for record in records {
            record.write(&mut message);
        }
        let mut data = (request_mac.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(request_mac);
        data.extend_from_slice(&message);
        data.extend_from_slice(&variables(key, 1_700_000_000, 0));
        let mac = key.mac(&data);
        let mut rdata = Vec::new();
        write_name(&mut rdata, "hmac-sha256");
        rdata.extend_from_slice(&1_700_000_000u64.to_be_bytes()[2..]);
        rdata.extend_from_slice(&FUDGE.to_be_bytes());
        rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&id.to_be_bytes());
        rdata.extend_from_slice(&[0, 0, 0, 0]);
        write_name(&mut message, "phoenix-key");
        message.extend_from_slice(&TYPE_TSIG.to_be_bytes());
        message.extend_from_slice(&CLASS_ANY.to_be_bytes());
        message.extend_from_slice(&0u32.to_be_bytes());
        message.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        message.extend_from_slice(&rdata);
        message[10..12].copy_from_slice(&1u16.to_be_bytes());
        message
    }

    fn server() -> Server {
        Server {
            address: "192.0.2.53:53".to_owned(),
            key: Some(key()),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_signed_answer_verifies_and_a_tampered_one_does_not() {
        let records = [
            Entry::add("www.example.org", 300, &Data::A(Ipv4Addr::new(203, 0, 113, 7))),
            Entry::add(
                "_phoenix.www.example.org",
                300,
                &Data::Txt("heritage=phoenix".to_owned()),
            ),
        ];
        let bytes = response(42, &records, &key(), b"request-mac");
        let message = Message::parse(&bytes).unwrap();
        assert_eq!(message.records.len(), 2);
        assert_eq!(message.records[0].data, Data::A(Ipv4Addr::new(203, 0, 113, 7)));
        assert_eq!(message.records[1].data, Data::Txt("heritage=phoenix".to_owned()));
        let mut chain = Chain::new(b"request-mac".to_vec());
        server().check(&message, &bytes, &mut chain, "a test").unwrap();

        let mut tampered = bytes.clone();
        let at = tampered.iter().position(|byte| *byte == 203).unwrap();
        tampered[at] = 198;
        let message = Message::parse(&tampered).unwrap();
        let mut chain = Chain::new(b"request-mac".to_vec());
        let error = server()
            .check(&message, &tampered, &mut chain, "a test")
            .unwrap_err();
        assert!(error.to_string().contains("does not verify"), "{error}");

        let message = Message::parse(&bytes).unwrap();
        let mut chain = Chain::new(b"another-request".to_vec());
        assert!(server().check(&message, &bytes, &mut chain, "a test").is_err());
    }

    #[test]
    fn a_request_carries_one_more_additional_record_and_its_signature_covers_the_message() {
        let server = server();
        let mut message = header(7, OPCODE_UPDATE, 1, 0, 0, 0);
        write_name(&mut message, "example.org");
        message.extend_from_slice(&[0, 6, 0, 1]);
        let unsigned = message.clone();
        let mac = server.sign(&mut message, 7);
        assert_eq!(u16::from_be_bytes([message[10], message[11]]), 1);
        let parsed = Message::parse(&message).unwrap();
        let tsig = parsed.tsig.unwrap();
        assert_eq!(tsig.key, "phoenix-key");
        assert_eq!(tsig.mac, mac);
        assert_eq!(stripped(&message, &tsig), unsigned);
        let mut data = unsigned;
        data.extend_from_slice(&variables(&key(), tsig.time, 0));
        assert!(key().verify(&data, &mac));
    }

    #[test]
    fn compressed_names_are_followed() {
        // Header, then `example.org` at 12 and `www` + pointer to it.
        let mut message = header(1, 0x8000, 0, 1, 0, 0);
        let zone_at = message.len();
        write_name(&mut message, "example.org");
        let record_at = message.len();
        message.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, zone_at as u8]);
        message.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
        // The answer record starts after the name written only to be pointed at.
        let mut reader = Reader {
            bytes: &message,
            at: record_at,
        };
        assert_eq!(reader.name().unwrap(), "www.example.org");
        assert_eq!(reader.u16().unwrap(), TYPE_A);
    }

    #[test]
    fn errors_are_put_in_words() {
        let bytes = {
            let mut message = header(3, 0x8000 | 9, 0, 0, 0, 0);
            message.truncate(12);
            message
        };
        let message = Message::parse(&bytes).unwrap();
        let mut chain = Chain::new(Vec::new());
        let error = server().check(&message, &bytes, &mut chain, "an update of zone example.org");
        assert_eq!(
            error.unwrap_err().to_string(),
            "192.0.2.53:53 refused an update of zone example.org: NOTAUTH: the server is not authoritative for the zone, or refused the key"
        );
        assert!(TsigKey::new("k", "hmac-md5", "AAAA").is_err());
        assert!(TsigKey::new("k", "hmac-sha256", "not base64!").is_err());
    }
}
