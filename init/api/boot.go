package api

import (
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/slots"
)

// bootInfo says how the node booted: directly, or by systemd-boot from which entry. efivars is
// efivarfs' mount point; a node booted without UEFI has no /sys/firmware/efi.
func bootInfo(efivars string) apiv1.Boot {
	b := apiv1.Boot{Loader: "direct", TriesLeft: -1, TriesDone: -1}
	if !slots.UEFI(efivars) {
		return b
	}
	b.Loader = "uefi"
	entry, ok := slots.Booted(efivars)
	if !ok {
		return b
	}
	b.Loader = "systemd-boot"
	b.Entry = entry
	if slot, left, done, ok := slots.ParseName(entry); ok {
		b.Slot, b.TriesLeft, b.TriesDone = slot, left, done
	}
	return b
}
