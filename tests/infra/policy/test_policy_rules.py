"""Each policy rule on compliant and violating resources of every provider it covers."""

from __future__ import annotations

from typing import Any

import pytest

from infra.policy import rules
from infra.policy.rules import StackResource

ZONE = "spaced.fun"
ADMIN = "198.51.100.0/24"

# --- no SSH / Swarm ports open to the internet ------------------------------------------------------

OPEN_CASES: list[tuple[str, str, dict[str, Any], list[int]]] = [
    # (case, type, props, watched ports expected in the message)
    (
        "aws sg ssh",
        rules.AWS_SECURITY_GROUP,
        {"ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}]},
        [22],
    ),
    (
        "aws sg all protocols v6",
        rules.AWS_SECURITY_GROUP,
        {"ingress": [{"protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]}]},
        [22, 2377, 4789, 7946],
    ),
    (
        "aws sg wide range",
        rules.AWS_SECURITY_GROUP,
        {"ingress": [{"protocol": "tcp", "fromPort": 2000, "toPort": 8000, "cidrBlocks": ["0.0.0.0/0"]}]},
        [2377, 4789, 7946],
    ),
    (
        "aws sg rule",
        rules.AWS_SECURITY_GROUP_RULE,
        {"type": "ingress", "protocol": "udp", "fromPort": 4789, "toPort": 4789, "ipv6CidrBlocks": ["::/0"]},
        [4789],
    ),
    (
        "aws vpc ingress",
        rules.AWS_INGRESS_RULE,
        {"ipProtocol": "tcp", "fromPort": 2377, "toPort": 2377, "cidrIpv4": "0.0.0.0/0"},
        [2377],
    ),
    (
        "gcp explicit",
        rules.GCP_FIREWALL,
        {"allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceRanges": ["0.0.0.0/0"]},
        [22],
    ),
    (
        "gcp default source is the internet",
        rules.GCP_FIREWALL,
        {"allows": [{"protocol": "tcp", "ports": ["2377"]}]},
        [2377],
    ),
    (
        "gcp all udp ports",
        rules.GCP_FIREWALL,
        {"allows": [{"protocol": "udp"}], "sourceRanges": ["::/0"]},
        [22, 2377, 4789, 7946],
    ),
    (
        "hcloud",
        rules.HCLOUD_FIREWALL,
        {"rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["0.0.0.0/0", "::/0"]}]},
        [22],
    ),
    (
        "hcloud any port",
        rules.HCLOUD_FIREWALL,
        {"rules": [{"direction": "in", "protocol": "udp", "port": "any", "sourceIps": ["0.0.0.0/0"]}]},
        [22, 2377, 4789, 7946],
    ),
    (
        "digitalocean",
        rules.DO_FIREWALL,
        {"inboundRules": [{"protocol": "tcp", "portRange": "7946", "sourceAddresses": ["0.0.0.0/0"]}]},
        [7946],
    ),
    (
        "digitalocean all ports",
        rules.DO_FIREWALL,
        {"inboundRules": [{"protocol": "tcp", "portRange": "1-65535", "sourceAddresses": ["::/0"]}]},
        [22, 2377, 4789, 7946],
    ),
    (
        "ionos rule without source ip",
        rules.IONOS_FIREWALL,
        {"protocol": "TCP", "portRangeStart": 22, "portRangeEnd": 22, "type": "INGRESS"},
        [22],
    ),
    (
        "ionos any protocol",
        rules.IONOS_NSG_FIREWALL,
        {"protocol": "ANY", "sourceIp": "0.0.0.0/0"},
        [22, 2377, 4789, 7946],
    ),
    (
        "ionos inline nic rule",
        rules.IONOS_SERVER,
        {
            "nic": {
                "firewallActive": True,
                "firewalls": [{"protocol": "TCP", "portRangeStart": 2377, "portRangeEnd": 2377}],
            }
        },
        [2377],
    ),
]

CLOSED_CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "aws sg admin ssh, public https",
        rules.AWS_SECURITY_GROUP,
        {
            "ingress": [
                {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": [ADMIN]},
                {
                    "protocol": "tcp",
                    "fromPort": 443,
                    "toPort": 443,
                    "cidrBlocks": ["0.0.0.0/0"],
                    "ipv6CidrBlocks": ["::/0"],
                },
            ],
            "egress": [{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}],
        },
    ),
    (
        "aws egress rule",
        rules.AWS_SECURITY_GROUP_RULE,
        {"type": "egress", "protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]},
    ),
    (
        "aws vpc mesh port",
        rules.AWS_INGRESS_RULE,
        {"ipProtocol": "udp", "fromPort": 51820, "toPort": 51820, "cidrIpv4": "0.0.0.0/0"},
    ),
    (
        "gcp from tags only",
        rules.GCP_FIREWALL,
        {"allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceTags": ["bastion"]},
    ),
    (
        "gcp egress",
        rules.GCP_FIREWALL,
        {
            "direction": "EGRESS",
            "allows": [{"protocol": "tcp", "ports": ["22"]}],
            "destinationRanges": ["0.0.0.0/0"],
        },
    ),
    (
        "gcp disabled",
        rules.GCP_FIREWALL,
        {"disabled": True, "allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceRanges": ["0.0.0.0/0"]},
    ),
    (
        "hcloud out + icmp",
        rules.HCLOUD_FIREWALL,
        {
            "rules": [
                {"direction": "out", "protocol": "tcp", "port": "22", "destinationIps": ["0.0.0.0/0"]},
                {"direction": "in", "protocol": "icmp", "sourceIps": ["0.0.0.0/0"]},
                {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": [ADMIN]},
            ]
        },
    ),
    (
        "digitalocean web + icmp",
        rules.DO_FIREWALL,
        {
            "inboundRules": [
                {"protocol": "tcp", "portRange": "443", "sourceAddresses": ["0.0.0.0/0", "::/0"]},
                {"protocol": "icmp", "sourceAddresses": ["0.0.0.0/0"]},
            ]
        },
    ),
    (
        "ionos from one address",
        rules.IONOS_FIREWALL,
        {"protocol": "TCP", "portRangeStart": 22, "portRangeEnd": 22, "sourceIp": "198.51.100.4"},
    ),
    ("ionos egress", rules.IONOS_FIREWALL, {"protocol": "ANY", "type": "EGRESS"}),
    (
        "not a firewall",
        "aws:s3/bucket:Bucket",
        {"ingress": [{"cidrBlocks": ["0.0.0.0/0"], "protocol": "-1"}]},
    ),
]


@pytest.mark.parametrize(("case", "type_", "props", "ports"), OPEN_CASES, ids=[c[0] for c in OPEN_CASES])
def test_open_admin_ports_are_reported(case, type_, props, ports):
    [message] = rules.exposed_admin_ports(type_, props)
    for port in ports:
        assert f"{port} (" in message
    for port in set(rules.WATCHED_PORTS) - set(ports):
        assert f"{port} (" not in message
    assert "restrict the source ranges" in message


@pytest.mark.parametrize(("case", "type_", "props"), CLOSED_CASES, ids=[c[0] for c in CLOSED_CASES])
def test_restricted_rules_pass(case, type_, props):
    assert rules.exposed_admin_ports(type_, props) == []


def test_each_open_rule_is_reported_with_its_position():
    props = {
        "ingress": [
            {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
            {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]},
            {"protocol": "udp", "fromPort": 7946, "toPort": 7946, "ipv6CidrBlocks": ["::/0"]},
        ]
    }
    messages = rules.exposed_admin_ports(rules.AWS_SECURITY_GROUP, props)
    assert [m.split(" opens")[0] for m in messages] == ["ingress[1]", "ingress[2]"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "::0/0", " 0.0.0.0/0 "])
def test_anywhere_forms(cidr):
    assert rules.is_anywhere(cidr)


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "198.51.100.4/32", "2001:db8::/32", "", None, "sg-123"])
def test_not_anywhere(cidr):
    assert not rules.is_anywhere(cidr)


# --- every server behind a firewall ------------------------------------------------------------------


def server(type_: str, props: dict[str, Any], name: str = "node") -> StackResource:
    return StackResource(urn=f"urn:pulumi:prod::spaced::{type_}::{name}", type=type_, props=props)


def firewall(
    type_: str, props: dict[str, Any], refs: dict[str, list[StackResource]] | None = None
) -> StackResource:
    deps = {prop: tuple(r.urn for r in targets) for prop, targets in (refs or {}).items()}
    return StackResource(
        urn=f"urn:pulumi:prod::spaced::{type_}::fw",
        type=type_,
        props=props,
        dependencies=tuple(u for urns in deps.values() for u in urns),
        property_dependencies=deps,
    )


def unprotected(*resources: StackResource) -> list[str]:
    return [urn for urn, _ in rules.servers_without_firewall(list(resources))]


def test_aws_instance_needs_security_groups():
    good = server(rules.AWS_INSTANCE, {"vpcSecurityGroupIds": ["sg-1"]}, "good")
    bad = server(rules.AWS_INSTANCE, {"vpcSecurityGroupIds": []}, "bad")
    assert unprotected(good, bad) == [bad.urn]


def test_gcp_instance_needs_a_firewall_targeting_its_tags():
    tagged = server(rules.GCP_INSTANCE, {"tags": ["spaced-node"]}, "tagged")
    untagged = server(rules.GCP_INSTANCE, {"tags": ["other"]}, "untagged")
    fw = firewall(rules.GCP_FIREWALL, {"targetTags": ["spaced-node"], "allows": [{"protocol": "tcp"}]})
    assert unprotected(tagged, untagged, fw) == [untagged.urn]
    network_wide = firewall(rules.GCP_FIREWALL, {"allows": [{"protocol": "udp", "ports": ["51820"]}]})
    assert unprotected(untagged, network_wide) == []
    egress_only = firewall(rules.GCP_FIREWALL, {"direction": "EGRESS", "targetTags": ["other"]})
    assert unprotected(untagged, egress_only) == [untagged.urn]


def test_hcloud_server_by_firewall_ids_attachment_or_labels():
    by_ids = server(rules.HCLOUD_SERVER, {"firewallIds": [11]}, "ids")
    attached = server(rules.HCLOUD_SERVER, {}, "attached")
    labelled = server(rules.HCLOUD_SERVER, {"labels": {"role": "node", "env": "prod"}}, "labelled")
    alone = server(rules.HCLOUD_SERVER, {"labels": {"role": "db"}}, "alone")
    attachment = firewall(
        rules.HCLOUD_FIREWALL_ATTACHMENT, {"firewallId": 11, "serverIds": [1]}, {"serverIds": [attached]}
    )
    by_label = firewall(rules.HCLOUD_FIREWALL, {"applyTos": [{"labelSelector": "role=node,env"}]})
    assert unprotected(by_ids, attached, labelled, alone, attachment, by_label) == [alone.urn]


def test_digitalocean_droplet_by_id_or_tag():
    listed = server(rules.DO_DROPLET, {}, "listed")
    tagged = server(rules.DO_DROPLET, {"tags": ["spaced"]}, "tagged")
    forgotten = server(rules.DO_DROPLET, {"tags": ["misc"]}, "forgotten")
    fw = firewall(rules.DO_FIREWALL, {"dropletIds": [1], "tags": ["spaced"]}, {"dropletIds": [listed]})
    assert unprotected(listed, tagged, forgotten, fw) == [forgotten.urn]


def test_ionos_server_needs_an_active_nic_firewall():
    inline = server(rules.IONOS_SERVER, {"nic": {"firewallActive": True}}, "inline")
    separate = server(rules.IONOS_SERVER, {"nic": {"firewallActive": False}}, "separate")
    open_ = server(rules.IONOS_VCPU_SERVER, {"nic": {"firewallActive": False}}, "open")
    nic = firewall(rules.IONOS_NIC, {"firewallActive": True, "serverId": "x"}, {"serverId": [separate]})
    assert unprotected(inline, separate, open_, nic) == [open_.urn]


def test_unprotected_server_message_says_how_to_fix():
    [(urn, message)] = rules.servers_without_firewall([server(rules.HCLOUD_SERVER, {}, "hetzner-1")])
    assert urn.endswith("hetzner-1") and "hetzner-1" in message and "firewall_ids" in message


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("role=node", True),
        ("role=db", False),
        ("role", True),
        ("!role", False),
        ("role!=db", True),
        ("role=node,env=prod", True),
        ("role=node,env=dev", False),
    ],
)
def test_hetzner_label_selectors(selector, matches):
    assert rules._labels_match(selector, {"role": "node", "env": "prod"}) is matches


# --- DNS records inside the zone ---------------------------------------------------------------------

DNS_GOOD = [
    (rules.IONOS_HOSTING_RECORD, {"zone": ZONE, "record_name": "aws", "fqdn": f"aws.{ZONE}"}),
    (rules.IONOS_HOSTING_RECORD, {"zone": ZONE, "record_name": "@"}),
    (rules.IONOS_HOSTING_RECORD, {"zone": f"dev.{ZONE}", "record_name": "aws"}),  # a sub-zone
    (rules.CLOUDFLARE_DNS_RECORD, {"zoneId": "z", "name": f"aws.{ZONE}"}),
    (rules.CLOUDFLARE_RECORD, {"zoneId": "z", "name": ZONE}),
    (rules.ROUTE53_RECORD, {"zoneId": "Z1", "name": f"aws.dev.{ZONE}."}),
    (rules.DO_DNS_RECORD, {"domain": ZONE, "name": "do"}),
    (rules.DO_DNS_RECORD, {"domain": ZONE, "name": "@"}),
    (rules.HCLOUD_ZONE_RRSET, {"zone": ZONE, "name": "hetzner.dev"}),
    (rules.HCLOUD_ZONE_RECORD, {"zone": "123456", "name": "hetzner"}),  # zone given by id
    (rules.IONOS_CLOUD_DNS_RECORD, {"zoneId": "z", "name": "ionos"}),
    (rules.IONOS_CLOUD_DNS_ZONE, {"zoneName": ZONE}),
    ("aws:s3/bucket:Bucket", {"name": "elsewhere.example"}),
]

DNS_BAD = [
    (rules.IONOS_HOSTING_RECORD, {"zone": "other.example", "record_name": "www"}, "zone 'other.example'"),
    (rules.IONOS_HOSTING_RECORD, {"zone": ZONE, "fqdn": "www.other.example"}, "'www.other.example'"),
    (rules.CLOUDFLARE_DNS_RECORD, {"zoneId": "z", "name": "www.other.example"}, "'www.other.example'"),
    (rules.CLOUDFLARE_DNS_RECORD, {"zoneId": "z", "name": "aws"}, "write the full name"),
    (rules.ROUTE53_RECORD, {"zoneId": "Z1", "name": f"{ZONE}.evil.example"}, "not inside zone"),
    (rules.DO_DNS_RECORD, {"domain": "other.example", "name": "www"}, "domain 'other.example'"),
    (rules.DO_DNS_RECORD, {"domain": ZONE, "name": f"do.{ZONE}"}, f"do.{ZONE}.{ZONE}"),
    (rules.DO_DNS_RECORD, {"domain": ZONE, "name": "www.other.example."}, "absolute"),
    (rules.HCLOUD_ZONE_RRSET, {"zone": "other.example", "name": "@"}, "zone 'other.example'"),
    (rules.IONOS_CLOUD_DNS_RECORD, {"zoneId": "z", "name": f"ionos.{ZONE}"}, "already ends with the zone"),
    (rules.IONOS_CLOUD_DNS_ZONE, {"zoneName": "other.example"}, "zoneName 'other.example'"),
    (rules.DO_DOMAIN, {"name": "notspaced.fun"}, "name 'notspaced.fun'"),
]


@pytest.mark.parametrize(("type_", "props"), DNS_GOOD)
def test_records_inside_the_zone_pass(type_, props):
    assert rules.dns_record_outside_zone(type_, props, ZONE) == []


@pytest.mark.parametrize(("type_", "props", "expected"), DNS_BAD)
def test_records_outside_the_zone_are_reported(type_, props, expected):
    messages = rules.dns_record_outside_zone(type_, props, ZONE)
    assert messages and any(expected in m for m in messages), messages


def test_zone_comparison_ignores_case_and_trailing_dot():
    assert (
        rules.dns_record_outside_zone(rules.ROUTE53_RECORD, {"name": "AWS.Spaced.Fun."}, "spaced.fun.") == []
    )


# --- secrets marked secret ---------------------------------------------------------------------------

TOKEN = "SWMTKN-1-" + "3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl" + "-1awxwuwd3z9j1z3puu7rcgdbx"
WG_KEY_LINE = "PrivateKey = " + "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
JOIN_FROM_STDIN = 'IFS= read -r join_token\n[[ "$join_token" =~ ^SWMTKN-[A-Za-z0-9-]+$ ]] || exit 1\n'

SECRET_BAD = [
    ({"create": "docker swarm join-token -q worker"}, [], "'stdout'"),
    ({"create": "umask 077; wg genkey | tee /etc/wireguard/key"}, ["stderr"], "'stdout'"),
    ({"create": f"docker swarm join --token {TOKEN} 10.210.0.1:2377"}, ["stdout"], "'create'"),
    ({"create": JOIN_FROM_STDIN, "stdin": f"{TOKEN}\n"}, [], "'stdin'"),
    (
        {
            "create": "install -m600 /dev/stdin /etc/wireguard/wg0.conf",
            "stdin": f"[Interface]\n{WG_KEY_LINE}\n",
        },
        ["stdout"],
        "'stdin'",
    ),
    ({"create": "deploy.sh", "environment": {"REGISTRY_PASSWORD": "x"}}, [], "'environment'"),
    ({"create": "deploy.sh", "environment": {"JOIN": TOKEN}}, [], "'environment'"),
]

SECRET_GOOD = [
    ({"create": "docker swarm join-token -q worker"}, ["stdout"]),
    ({"create": f"docker swarm join --token {TOKEN} 10.210.0.1:2377"}, ["create", "stdout"]),
    ({"create": JOIN_FROM_STDIN, "stdin": f"{TOKEN}\n"}, ["stdin"]),  # the token on stdin, the script clean
    (
        {
            "create": "install -m600 /dev/stdin /etc/wireguard/wg0.conf",
            "stdin": f"[Interface]\n{WG_KEY_LINE}\n",
        },
        ["stdin", "stdout", "stderr"],
    ),
    ({"create": "sudo sh -s", "stdin": "apt-get install -y docker.io\n"}, []),  # a script, no secret
    ({"create": "docker info --format '{{.Swarm.LocalNodeState}}'", "environment": {"LANG": "C"}}, []),
]


@pytest.mark.parametrize(("props", "aso", "expected"), SECRET_BAD)
def test_commands_handling_secrets_must_mark_them(props, aso, expected):
    messages = rules.unmarked_secrets(rules.REMOTE_COMMAND, props, aso)
    assert any(m.startswith(expected) for m in messages), messages


@pytest.mark.parametrize(("props", "aso"), SECRET_GOOD)
def test_commands_with_marked_or_no_secrets_pass(props, aso):
    assert rules.unmarked_secrets(rules.REMOTE_COMMAND, props, aso) == []


def test_dynamic_resources_must_mark_secret_named_properties():
    props = {"zone": ZONE, "api_key": "p.s", "content": "203.0.113.1", "__provider": "..."}
    [message] = rules.unmarked_secrets(rules.IONOS_HOSTING_RECORD, props, [])
    assert message.startswith("'api_key'")
    assert rules.unmarked_secrets(rules.IONOS_HOSTING_RECORD, props, ["api_key"]) == []
    assert rules.unmarked_secrets(rules.IONOS_HOSTING_RECORD, props, ["apiKey"]) == []  # engine spelling
    wg = {"rotation": "", "private_key": "k", "public_key": "p"}
    assert rules.unmarked_secrets("pulumi-python:dynamic/spaced:WireGuardKey", wg, ["private_key"]) == []
    assert rules.unmarked_secrets("pulumi-python:dynamic/spaced:WireGuardKey", wg, [])


def test_other_resources_are_not_the_secret_rules_business():
    assert rules.unmarked_secrets("hcloud:index/server:Server", {"userData": "token: x"}, []) == []
