// Package cluster runs a Kubernetes control plane on the host's loopback for ingot worker VMs
// to join: etcd, kube-apiserver and kube-controller-manager as child processes of `ingot cluster
// up`, built from the Go module proxy into ingot's cache, with a PKI and a bootstrap token it
// generates. Everything it starts listens on 127.0.0.1 only (QEMU guests reach it through a
// guestfwd); its state — certificates, etcd's data, logs, pid files — lives in one directory
// that `ingot cluster down` removes.
//
// It talks to the API server with plain HTTPS and JSON (net/http with the admin certificate):
// ingot does not import client-go.
package cluster
