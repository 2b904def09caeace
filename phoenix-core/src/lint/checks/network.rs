//! Parsing of addresses as they appear in configuration: IPs, CIDRs, MAC addresses, port lists.

use std::net::IpAddr;

use ipnet::IpNet;

/// An interface address: `dhcp`, or an IP with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InterfaceAddress {
    Dhcp,
    Static(IpNet),
}

pub(crate) fn parse_interface_address(text: &str) -> Result<InterfaceAddress, String> {
    if text == "dhcp" {
        return Ok(InterfaceAddress::Dhcp);
    }
    if !text.contains('/') {
        return Err(format!("`{text}` has no prefix length"));
    }
    text.parse::<IpNet>()
        .map(InterfaceAddress::Static)
        .map_err(|_| format!("`{text}` is not an address with a prefix length"))
}

pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

/// An IP, a CIDR, or an IP range `a-b`.
pub(crate) fn parse_address_match(text: &str) -> Result<(), String> {
    if let Some((first, last)) = text.split_once('-') {
        let first = parse_ip(first)?;
        let last = parse_ip(last)?;
        if first.is_ipv4() != last.is_ipv4() || first > last {
            return Err(format!(
                "`{text}` is not an ascending range of one address family"
            ));
        }
        return Ok(());
    }
    if text.contains('/') {
        return text
            .parse::<IpNet>()
            .map(|_| ())
            .map_err(|_| format!("`{text}` is not a CIDR"));
    }
    parse_ip(text).map(|_| ())
}

/// Splits a list of DNS servers written with spaces or commas.
pub(crate) fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split([' ', ',', ';']).filter(|part| !part.is_empty())
}

/// A MAC address `AA:BB:CC:DD:EE:FF` (either case), returned as bytes.
pub(crate) fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let invalid = || format!("`{text}` is not a MAC address");
    let mut bytes = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut bytes {
        let part = parts.next().ok_or_else(invalid)?;
        if part.len() != 2 {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(bytes)
}

/// A port list: `22`, `8000:8010`, `80,443`. Returns the first problem.
pub(crate) fn parse_ports(text: &str) -> Result<(), String> {
    for part in text.split(',') {
        let part = part.trim();
        let (low, high) = part.split_once(':').unwrap_or((part, part));
        let low = parse_port(low).ok_or_else(|| format!("`{part}` is not a port or a range"))?;
        let high = parse_port(high).ok_or_else(|| format!("`{part}` is not a port or a range"))?;
        if low > high {
            return Err(format!("range `{part}` runs backwards"));
        }
    }
    Ok(())
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses() {
        assert_eq!(parse_interface_address("dhcp"), Ok(InterfaceAddress::Dhcp));
        assert!(parse_interface_address("10.0.0.5/24").is_ok());
        assert!(parse_interface_address("fd00::5/64").is_ok());
        assert!(parse_interface_address("10.0.0.5").is_err());
        assert!(parse_interface_address("10.0.0.300/24").is_err());
        assert!(parse_interface_address("10.0.0.5/33").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:aa:BB:cc"),
            Ok([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc])
        );
        for bad in [
            "52:54:00:aa:bb",
            "52:54:00:aa:bb:cc:dd",
            "52-54-00-aa-bb-cc",
            "5:54:00:aa:bb:cc",
            "zz:54:00:aa:bb:cc",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        for good in ["22", "80,443", "8000:8010", "1, 65535"] {
            assert_eq!(parse_ports(good), Ok(()), "{good}");
        }
        for bad in ["0", "65536", "ssh", "10:5", "80,", "-1", "1:2:3"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn address_matches() {
        for good in ["10.0.0.1", "10.0.0.0/24", "10.0.0.1-10.0.0.9", "fd00::1"] {
            assert_eq!(parse_address_match(good), Ok(()), "{good}");
        }
        for bad in ["10.0.0", "10.0.0.0/40", "10.0.0.9-10.0.0.1", "traefik"] {
            assert!(parse_address_match(bad).is_err(), "{bad}");
        }
    }
}
