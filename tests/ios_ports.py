"""Reads a Cisco IOS configuration with ciscoconfparse and prints, as JSON,
the VLANs it declares, how it sets up every interface, and every top-level
line with its children.

The config is split at CR as well as LF: a terminal pasting it into
`configure terminal` takes either as Enter.

This is the independent oracle of tests/validators.rs and of the round-trip
oracle (tests/common/oracle.rs): the Rust tests compare
what a real IOS-config parser sees, port by port, with the site file. Run it
with the test venv (.ci/install-deps): python ios_ports.py CONFIG
"""

import json
import re
import sys

from ciscoconfparse import CiscoConfParse


def vlans(parse):
    """`vlan ID` blocks: id to the `name` under it (None without one)."""
    found = {}
    for block in parse.find_objects(r"^vlan\s+\d+\s*$"):
        names = [
            child.text.split(None, 1)[1].strip()
            for child in block.children
            if child.text.split()[:1] == ["name"] and len(child.text.split()) > 1
        ]
        found[int(block.text.split()[1])] = names[0] if names else None
    return found


def interface(intf):
    """Mode, VLANs and address of one `interface` block, as the parser reads them."""
    if intf.has_manual_switch_trunk:
        mode = "trunk"
    elif intf.has_manual_switch_access:
        mode = "access"
    elif intf.is_switchport:
        # Switchport lines without `switchport mode`: IOS negotiates (DTP).
        mode = "dynamic"
    else:
        mode = "routed"
    entry = {
        "mode": mode,
        "access_vlan": intf.access_vlan if mode == "access" else None,
        "allowed_vlans": None,
        "native_vlan": None,
        "ipv4": None,
        "shutdown": intf.is_shutdown,
    }
    if mode == "trunk":
        entry["allowed_vlans"] = sorted(intf.trunk_vlans_allowed.as_list())
        entry["native_vlan"] = intf.native_vlan
    if intf.ipv4_addr:
        entry["ipv4"] = {"address": intf.ipv4_addr, "netmask": intf.ipv4_netmask}
    return entry


def blocks(parse):
    """Every top-level line but comments, with the lines under it."""
    return [
        {"line": obj.text, "children": [c.text for c in obj.children]}
        for obj in parse.find_objects(r"^\S")
        if not obj.text.startswith("!")
    ]


def main(path):
    text = open(path, encoding="utf-8", errors="surrogateescape").read()
    parse = CiscoConfParse(re.split(r"\r\n|\r|\n", text), syntax="ios", factory=True)
    interfaces = {
        intf.text.split(None, 1)[1]: interface(intf)
        for intf in parse.find_objects(r"^interface\s+\S")
    }
    json.dump(
        {"vlans": vlans(parse), "interfaces": interfaces, "blocks": blocks(parse)},
        sys.stdout,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
