// Package pki is the node API's certificates, kept by the operator in a directory of their own:
// a CA (`ingot pki init`), a server certificate per node (`ingot pki node NAME --ip …`) that the
// node config's [api] table hands the node, and client certificates (`ingot pki client NAME
// --role admin|reader`) for `ingot ctl`. A client's role is its certificate's Organization: the
// node API lets an admin do everything and a reader only look.
//
// The directory:
//
//	ca.crt, ca.key                      the CA (key 0600); the node trusts clients it signed
//	nodes/NAME.crt, nodes/NAME.key      a node's server certificate
//	clients/NAME.crt, clients/NAME.key  a client's certificate
package pki

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/internal/certs"
)

// Validity of what the directory holds. Nodes and clients are reissued by running the command
// again; the CA outlives them.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 2 * 365 * 24 * time.Hour
)

// Roles a client certificate can carry (apiv1.RoleOf reads them back).
const (
	RoleAdmin  = apiv1.RoleAdmin
	RoleReader = apiv1.RoleReader
)

// Files of the directory.
const (
	FileCA     = "ca.crt"
	FileCAKey  = "ca.key"
	DirNodes   = "nodes"
	DirClients = "clients"
)

// names are what a node or client may be called: one plain path element, so no file lands
// outside the directory.
var names = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

func checkName(kind, name string) error {
	if !names.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1-63 of a-z, 0-9, '.', '_', '-', starting and ending with a letter or digit", kind, name)
	}
	return nil
}

// Init makes the CA in dir, which it creates. It refuses a directory that has one already:
// replacing the CA would lock every node out of the clients it trusts.
func Init(dir string, now time.Time) error {
	if _, err := os.Stat(filepath.Join(dir, FileCA)); err == nil {
		return fmt.Errorf("pki init: %s already holds a CA (%s); remove it by hand to start over", dir, FileCA)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	ca, err := certs.NewCA(now, "ingot-node-api-ca", CAValidity)
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	return write(dir, "", "ca", ca)
}

// Node issues node name's server certificate for the addresses and DNS names it is reached at
// (at least one), signed by dir's CA.
func Node(dir, name string, ips []net.IP, dnsNames []string, now time.Time) error {
	if err := checkName("node", name); err != nil {
		return err
	}
	if len(ips) == 0 && len(dnsNames) == 0 {
		return fmt.Errorf("pki node %s: name at least one --ip or --dns the node is reached at", name)
	}
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	kp, err := certs.Issue(now, ca, x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		IPAddresses: ips,
		DNSNames:    dnsNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, CertValidity)
	if err != nil {
		return fmt.Errorf("pki node %s: %w", name, err)
	}
	return write(dir, DirNodes, name, kp)
}

// Client issues client name's certificate with role (RoleAdmin or RoleReader) as its
// Organization, signed by dir's CA.
func Client(dir, name, role string, now time.Time) error {
	if err := checkName("client", name); err != nil {
		return err
	}
	if role != RoleAdmin && role != RoleReader {
		return fmt.Errorf("pki client %s: role %q: want %s or %s", name, role, RoleAdmin, RoleReader)
	}
	ca, err := loadCA(dir)
	if err != nil {
		return err
	}
	kp, err := certs.Issue(now, ca, x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{role}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, CertValidity)
	if err != nil {
		return fmt.Errorf("pki client %s: %w", name, err)
	}
	return write(dir, DirClients, name, kp)
}

func loadCA(dir string) (certs.KeyPair, error) {
	ca, err := certs.Load(filepath.Join(dir, FileCA), filepath.Join(dir, FileCAKey))
	if errors.Is(err, os.ErrNotExist) {
		return ca, fmt.Errorf("%s holds no CA: run ingot pki init --dir %s first", dir, dir)
	}
	if err == nil && !ca.Cert.IsCA {
		return ca, fmt.Errorf("%s: not a CA certificate", filepath.Join(dir, FileCA))
	}
	return ca, err
}

// write stores kp as sub/name.crt (0644) and sub/name.key (0600) under dir.
func write(dir, sub, name string, kp certs.KeyPair) error {
	d := filepath.Join(dir, sub)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	key, err := kp.KeyPEM()
	if err != nil {
		return err
	}
	// The key first: a certificate is never there without it.
	if err := certs.WriteFile(filepath.Join(d, name+".key"), key, 0o600); err != nil {
		return err
	}
	return certs.WriteFile(filepath.Join(d, name+".crt"), kp.CertPEM(), 0o644)
}

// ClientTLS is the TLS configuration `ingot ctl` calls a node with: client name's certificate
// from dir (the only client there when name is empty) and dir's CA as the one root the node's
// certificate must chain to. It returns the client's name too.
func ClientTLS(dir, name string) (*tls.Config, string, error) {
	if name == "" {
		entries, err := os.ReadDir(filepath.Join(dir, DirClients))
		if err != nil {
			return nil, "", fmt.Errorf("%s: no client certificates (ingot pki client NAME --dir %s makes one): %w", dir, dir, err)
		}
		var found []string
		for _, e := range entries {
			if n, ok := strings.CutSuffix(e.Name(), ".crt"); ok {
				found = append(found, n)
			}
		}
		if len(found) != 1 {
			return nil, "", fmt.Errorf("%s holds %d client certificates (%s): name one with --client", dir, len(found), strings.Join(found, ", "))
		}
		name = found[0]
	}
	if err := checkName("client", name); err != nil {
		return nil, "", err
	}
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, DirClients, name+".crt"), filepath.Join(dir, DirClients, name+".key"))
	if err != nil {
		return nil, "", fmt.Errorf("client %s: %w", name, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, FileCA))
	if err != nil {
		return nil, "", fmt.Errorf("%s holds no CA: %w", dir, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, "", fmt.Errorf("%s: no PEM certificate", filepath.Join(dir, FileCA))
	}
	return &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: roots, MinVersion: tls.VersionTLS13}, name, nil
}

// APITable renders node name's [api] table for its node.toml: its certificate and key from dir
// and dir's CA as the client CA, with port unless it is 0 (the default, 50000). The text holds
// the node's private key: it belongs in that node's config and nowhere else.
func APITable(dir, name string, port int) ([]byte, error) {
	if err := checkName("node", name); err != nil {
		return nil, err
	}
	var parts [3][]byte
	for i, f := range []string{filepath.Join(DirNodes, name+".crt"), filepath.Join(DirNodes, name+".key"), FileCA} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("node %s: %w (ingot pki node %s makes its certificate)", name, err, name)
		}
		// PEM is base64 and header lines: it never holds the quote or backslash that would end or
		// escape a TOML multi-line string.
		if strings.ContainsAny(string(b), `"\`) {
			return nil, fmt.Errorf("%s: not PEM", filepath.Join(dir, f))
		}
		parts[i] = b
	}
	var out strings.Builder
	fmt.Fprintf(&out, "# node API identity of %s (ingot pki node-toml); holds its private key\n[api]\n", name)
	if port != 0 {
		fmt.Fprintf(&out, "port = %d\n", port)
	}
	for i, key := range []string{"cert", "key", "client_ca"} {
		fmt.Fprintf(&out, "%s = \"\"\"\n%s\"\"\"\n", key, parts[i])
	}
	return []byte(out.String()), nil
}
