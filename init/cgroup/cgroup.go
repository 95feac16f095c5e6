// Package cgroup prepares the unified (v2) cgroup hierarchy at boot: every controller the kernel
// offers is enabled for the root's children, and child groups are created for services and for
// pods. The pod group is a delegated subtree: the runtime creates pod and container groups below
// it and never touches the rest of the hierarchy.
package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is where cgroup2 is mounted.
const Root = "/sys/fs/cgroup"

// Group names below the root.
const (
	Services = "ingot.services" // one child per supervised service
	Pods     = "ingot.pods"     // delegated to the CRI runtime
)

// Controllers lists the controllers available in the group at dir.
func Controllers(dir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("read controllers of %s: %w", dir, err)
	}
	return strings.Fields(string(data)), nil
}

// Enable turns on every available controller for the children of dir and returns what is now
// enabled. Each controller is written separately so one the kernel refuses does not block the
// others; refusals are reported together.
func Enable(dir string) ([]string, error) { return enable(dir, writeControl) }

// writeControl is one write to a cgroup control file. cgroupfs takes each write as one request
// ("+memory"), where a plain file would keep only the last: tests record the writes instead.
func writeControl(path, data string) error { return os.WriteFile(path, []byte(data), 0) }

func enable(dir string, write func(path, data string) error) ([]string, error) {
	ctrls, err := Controllers(dir)
	if err != nil {
		return nil, err
	}
	var failed []string
	for _, c := range ctrls {
		if err := write(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil {
			failed = append(failed, c+": "+err.Error())
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return nil, fmt.Errorf("read subtree_control of %s: %w", dir, err)
	}
	enabled := strings.Fields(string(data))
	if len(failed) > 0 {
		return enabled, fmt.Errorf("enable controllers in %s: %s", dir, strings.Join(failed, "; "))
	}
	return enabled, nil
}

// Setup enables controllers in the root, creates the service and pod groups, and enables every
// controller inside the pod group so the runtime can limit pods and containers.
func Setup(root string) ([]string, error) { return setup(root, writeControl) }

func setup(root string, write func(path, data string) error) ([]string, error) {
	enabled, err := enable(root, write)
	if err != nil {
		return enabled, err
	}
	for _, g := range []string{Services, Pods} {
		if err := os.MkdirAll(filepath.Join(root, g), 0o755); err != nil {
			return enabled, fmt.Errorf("create cgroup %s: %w", g, err)
		}
	}
	if _, err := enable(filepath.Join(root, Pods), write); err != nil {
		return enabled, err
	}
	return enabled, nil
}
