"""Reads a Cisco IOS configuration with ciscoconfparse and prints, as JSON,
the VLANs it declares and how it sets up every interface.

This is the independent oracle of tests/validators.rs: the Rust test compares
what a real IOS-config parser sees, port by port, with the site file. Run it
with the test venv (.ci/install-deps): python ios_ports.py CONFIG
"""

import json
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


def main(path):
    parse = CiscoConfParse(path, syntax="ios", factory=True)
    interfaces = {
        intf.name: interface(intf) for intf in parse.find_objects(r"^interface\s+\S")
    }
    json.dump({"vlans": vlans(parse), "interfaces": interfaces}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
