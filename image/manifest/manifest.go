// Package manifest is manifest.json, the description `ingot build` writes beside every image: the
// inputs it was built from and the outputs with their sizes and digests, plus the names of the
// output files. It is the one piece of the build that readers of an image (the QEMU launcher, the
// upgrade path) need, so it lives apart from the pipeline and imports nothing of it.
package manifest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Output file names in an image directory.
const (
	FileKernel    = "vmlinuz"
	FileInitramfs = "initramfs.cpio.zst"
	FileUKI       = "ingot.efi"
	FileDisk      = "disk.raw"
	FileQCOW2     = "disk.qcow2" // disk.raw as QCOW2, when asked for (ingot build --qcow2)
	FileISO       = "ingot.iso"  // the hybrid ISO, when asked for (ingot build --iso)
	FileManifest  = "manifest.json"
)

// Input is one thing the image was built from.
type Input struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256"`
}

// Output is one file written.
type Output struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest is manifest.json.
type Manifest struct {
	Profile         string   `json:"profile"`
	Version         string   `json:"version"`  // os-release VERSION_ID
	BuildID         string   `json:"build_id"` // os-release BUILD_ID
	Arch            string   `json:"arch"`
	KernelRelease   string   `json:"kernel_release"`
	Cmdline         string   `json:"cmdline"`
	Modules         []string `json:"modules"`
	SourceDateEpoch int64    `json:"source_date_epoch"`
	// RootFS is the read-only root filesystem (a squashfs) inside the initramfs, by its path there.
	RootFS *Output `json:"root_fs,omitempty"`
	// Firmware are the firmware files shipped in /lib/firmware (from the profile's
	// [kernel] firmware packages); FirmwareMissing the files shipped modules name that none of
	// those packages has (a device needing one works without it or not at all).
	Firmware        []Firmware `json:"firmware,omitempty"`
	FirmwareMissing []string   `json:"firmware_missing,omitempty"`
	Inputs          []Input    `json:"inputs"`
	Outputs         []Output   `json:"outputs"`
}

// Firmware is one shipped firmware file.
type Firmware struct {
	Path    string   `json:"path"`    // under /lib/firmware
	Package string   `json:"package"` // the Debian package it came from
	Modules []string `json:"modules"` // the modules naming it
	SHA256  string   `json:"sha256"`
}

// Read reads the manifest of the image in dir.
func Read(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileManifest))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w (run ingot build)", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("image %s: %s: %w", dir, FileManifest, err)
	}
	return &m, nil
}

// ISOLabel is ingot.iso's volume label, by which the installer finds the medium it booted from.
const ISOLabel = "INGOT"

// InstallArg is the kernel argument naming the disk a node booted from the ISO installs onto.
const InstallArg = "ingot.install"

// FileInstallInfo is the file on the ISO that says what the installer writes and how to check it.
const FileInstallInfo = "install.json"

// InstallInfo is FileInstallInfo's content.
type InstallInfo struct {
	Profile    string `json:"profile"`
	Version    string `json:"version"`
	BuildID    string `json:"build_id"`
	Arch       string `json:"arch"`
	Disk       string `json:"disk"`        // disk.raw: what the target holds once written
	DiskSize   int64  `json:"disk_size"`   // its size in bytes
	DiskSHA256 string `json:"disk_sha256"` // and digest, checked by reading the target back
	Image      string `json:"image"`       // the file on the ISO holding it (QCOW2)
}
