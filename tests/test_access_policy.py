"""The socket-free access policies: address allow and deny lists (one CIDR reader for
the whole project, shared with the PROXY protocol's ``proxy_allow_from``) and the
allow lists by Unix peer uid and gid."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor.sansio.access import (
    AddressPolicy,
    CredentialsPolicy,
    NetworkSet,
    PeerCredentials,
    parse_networks,
    peer_ip,
)
from reactor.sansio.proxy_policy import ProxyPolicy


def policy(allow: Any = None, deny: Any = None) -> AddressPolicy:
    found = AddressPolicy.of(allow, deny)
    assert found is not None
    return found


def test_no_list_is_no_policy() -> None:
    assert AddressPolicy.of() is None
    assert AddressPolicy.of(None, []) is None  # an empty deny list denies nothing
    assert CredentialsPolicy.of() is None


def test_entries_may_be_comma_or_space_separated_and_repeated() -> None:
    found = parse_networks(["10.0.0.0/8, 192.0.2.1", "2001:db8::/32 ::1"], "x")
    assert found == tuple(ipaddress.ip_network(t) for t in
                          ("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"))
    assert parse_networks("10.1.2.3/8", "x") == (ipaddress.ip_network("10.0.0.0/8"),)
    assert parse_networks(["10.0.0.0/8", "*"], "x") is None
    assert parse_networks(None, "x") == ()


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-an-address", "::1/129", "10.0.0.0/x",
                                 "300.1.1.1"])
def test_a_malformed_entry_is_an_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"allow_from: '{bad}' is not an IP address"):
        AddressPolicy.of(["10.0.0.0/8", bad])
    with pytest.raises(ValueError, match=rf"deny_from: '{bad}'"):
        AddressPolicy.of(None, bad)
    with pytest.raises(ValueError, match=rf"proxy_allow_from: '{bad}'"):
        ProxyPolicy.of("any", bad)


def test_an_empty_allow_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="allow_from is empty"):
        AddressPolicy.of([])
    with pytest.raises(ValueError, match="allow_from is empty"):
        AddressPolicy.of(" , ")
    with pytest.raises(ValueError, match="proxy_allow_from is empty"):
        ProxyPolicy.of("any", [])


def test_the_deny_list_wins() -> None:
    found = policy(["10.0.0.0/8"], ["10.0.0.13"])
    assert found.refusal(("10.0.0.12", 1)) is None
    assert found.refusal(("10.0.0.13", 1)) == "in deny_from"
    assert found.refusal(("192.0.2.1", 1)) == "not in allow_from"
    assert policy("*", "*").refusal(("10.0.0.1", 1)) == "in deny_from"


def test_without_an_allow_list_every_address_not_denied_is_admitted() -> None:
    found = policy(deny=["192.0.2.0/24", "2001:db8::/32"])
    assert found.admits(("10.0.0.1", 1))
    assert found.admits(("::1", 1, 0, 0))
    assert not found.admits(("192.0.2.200", 1))
    assert not found.admits(("2001:db8::5", 1, 0, 0))


def test_the_extremes() -> None:
    every4 = policy("0.0.0.0/0")
    assert every4.admits(("255.255.255.255", 1)) and every4.admits(("0.0.0.0", 1))
    assert not every4.admits(("::1", 1, 0, 0))  # /0 of one family is that family only
    every6 = policy("::/0")
    assert every6.admits(("2001:db8::1", 1, 0, 0)) and not every6.admits(("10.0.0.1", 1))
    every = policy("*")
    assert every.admits(("10.0.0.1", 1)) and every.admits(("::1", 1, 0, 0))
    host6 = policy("2001:db8::7/128")
    assert host6.admits(("2001:db8::7", 1, 0, 0))
    assert not host6.admits(("2001:db8::8", 1, 0, 0))
    host4 = policy("192.0.2.7/32")
    assert host4.admits(("192.0.2.7", 1)) and not host4.admits(("192.0.2.6", 1))


def test_ipv4_mapped_peers_and_networks_are_read_as_ipv4() -> None:
    found = policy("10.0.0.0/8")
    assert found.admits(("::ffff:10.1.2.3", 1, 0, 0))
    assert not found.admits(("::ffff:11.1.2.3", 1, 0, 0))
    mapped = policy("::ffff:10.0.0.0/104")  # the mapped form of 10.0.0.0/8
    assert mapped.allow is not None
    assert mapped.allow.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert mapped.admits(("10.9.9.9", 1)) and mapped.admits(("::ffff:10.9.9.9", 1, 0, 0))
    assert not policy("::/0").admits(("::ffff:10.1.2.3", 1, 0, 0))
    assert not policy(deny="10.0.0.0/8").admits(("::ffff:10.1.2.3", 1, 0, 0))


def test_a_zone_is_left_out_and_a_peer_without_an_address_is_in_no_network() -> None:
    assert peer_ip(("fe80::1%lo", 1, 0, 1)) == ipaddress.ip_address("fe80::1")
    assert policy("fe80::/10").admits(("fe80::1%lo", 1, 0, 1))
    for peer in ("", None, "/run/x.sock", ("not-an-ip", 1), (), (5, 1)):
        assert peer_ip(peer) is None
        assert policy("*").refusal(peer) == "not in allow_from"
        assert policy(deny="*").admits(peer)


def test_describe_names_both_lists() -> None:
    assert policy(["10.0.0.0/8"], ["10.0.0.13"]).describe() == (
        "allow_from 10.0.0.0/8; deny_from 10.0.0.13/32")


addresses4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
addresses6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
networks4 = st.tuples(addresses4, st.integers(0, 32)).map(
    lambda t: ipaddress.IPv4Network((int(t[0]), t[1]), strict=False))
networks6 = st.tuples(addresses6, st.integers(0, 128)).map(
    lambda t: ipaddress.IPv6Network((int(t[0]), t[1]), strict=False))


@given(st.lists(networks4 | networks6, max_size=12),
       st.lists(addresses4 | addresses6, min_size=1, max_size=12))
def test_a_network_set_agrees_with_a_plain_search(networks: list[Any],
                                                  probes: list[Any]) -> None:
    found = NetworkSet(networks)
    unmapped = list(found.networks)
    # probe the networks' own edges too, where an off-by-one would show
    probes += [n.network_address for n in unmapped] + [n.broadcast_address for n in unmapped]
    for address in probes:
        assert (address in found) == any(address in n for n in unmapped
                                         if n.version == address.version)


def test_credentials_policy_admits_by_uid_or_gid() -> None:
    found = CredentialsPolicy.of([1000, 1001], 50)
    assert found is not None
    assert found.admits(PeerCredentials(1, 1000, 7))
    assert found.admits(PeerCredentials(1, 7, 50))
    assert not found.admits(PeerCredentials(1, 7, 7))
    assert not found.admits(None)  # credentials that could not be read
    assert found.describe() == "allow_uids 1000, 1001; allow_gids 50"
    only_gid = CredentialsPolicy.of(None, [0])
    assert only_gid is not None and not only_gid.admits(PeerCredentials(1, 0, 5))
    assert str(PeerCredentials(12, 34, 56)) == "pid=12 uid=34 gid=56"


@pytest.mark.parametrize("bad", [[-1], ["1000"], [1.5], [True]])
def test_an_id_that_is_not_an_integer_is_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"allow_uids: .* is not a user or group id"):
        CredentialsPolicy.of(bad)


def test_an_empty_id_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="allow_gids is empty"):
        CredentialsPolicy.of(None, [])
