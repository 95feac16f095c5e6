package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// The health gate of an image swap asks the API server whether the node is Ready, with the
// kubelet's own credentials (its kubeconfig: the one the node config gives, or the one TLS
// bootstrapping wrote). The Node authorizer lets a kubelet read its own Node object. A Ready
// condition left from the previous boot does not count: the node controller takes 40 s or
// more to notice a node went away, so Ready must come with this boot's ID in nodeInfo.

// HealthzURL is the kubelet's health endpoint (its default healthzBindAddress and healthzPort),
// the health gate's check on a node that joins no cluster.
const HealthzURL = "http://127.0.0.1:10248/healthz"

// Healthz checks the kubelet's own health endpoint.
func Healthz(ctx context.Context, timeout time.Duration) Check {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, HealthzURL, nil)
	if err != nil {
		return Check{Msg: err.Error()}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Check{Msg: "the kubelet's health endpoint does not answer: " + err.Error()}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return Check{Msg: fmt.Sprintf("the kubelet reports itself unhealthy (%s): %s", resp.Status, strings.TrimSpace(string(body)))}
	}
	return Check{OK: true, Msg: "the kubelet reports itself healthy"}
}

// NodeReady checks, with the kubelet's kubeconfig at path, that the API server has node name
// Ready as reported by the boot whose ID is bootID. timeout bounds the request. A kubeconfig whose
// user authenticates through a plugin gets the kubelet's health endpoint checked instead.
func NodeReady(ctx context.Context, path, name, bootID string, timeout time.Duration) Check {
	c, err := readKubeconfig(path)
	if errors.Is(err, ErrUnsupportedAuth) {
		h := Healthz(ctx, timeout)
		h.Msg = err.Error() + "; checked instead: " + h.Msg
		return h
	}
	if err != nil {
		return Check{Msg: err.Error()}
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: c.tls, Proxy: nil, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+"/api/v1/nodes/"+url.PathEscape(name), nil)
	if err != nil {
		return Check{Msg: fmt.Sprintf("kubeconfig %s: server %q: %v", path, c.server, err)}
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Check{Msg: describe(c.server, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Check{Msg: fmt.Sprintf("API server %s: reading node %s: %v", c.server, name, err)}
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Check{Msg: fmt.Sprintf("node %s is not registered with the API server %s", name, c.server)}
	case http.StatusUnauthorized, http.StatusForbidden:
		return Check{Msg: fmt.Sprintf("API server %s refused the kubelet's credentials (%s) reading node %s", c.server, resp.Status, name)}
	default:
		return Check{Msg: fmt.Sprintf("API server %s answered %s reading node %s", c.server, resp.Status, name)}
	}
	return nodeReady(body, name, bootID)
}

// nodeReady decides from a Node object (JSON) whether it is Ready for boot bootID.
func nodeReady(body []byte, name, bootID string) Check {
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string }
			NodeInfo   struct {
				BootID string `json:"bootID"`
			} `json:"nodeInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &n); err != nil {
		return Check{Msg: fmt.Sprintf("node %s: the API server's answer is not a Node: %v", name, err)}
	}
	if got := n.Status.NodeInfo.BootID; got != bootID {
		return Check{Msg: fmt.Sprintf("node %s has not reported from this boot yet (its status is from boot %q, this is %q)", name, got, bootID)}
	}
	for _, c := range n.Status.Conditions {
		if c.Type != "Ready" {
			continue
		}
		if c.Status == "True" {
			return Check{OK: true, Msg: fmt.Sprintf("node %s is Ready in the API server", name)}
		}
		return Check{Msg: fmt.Sprintf("node %s is not Ready (%s): %s: %s", name, c.Status, c.Reason, c.Message)}
	}
	return Check{Msg: fmt.Sprintf("node %s has no Ready condition yet", name)}
}

// kubeconfigFile is the part of a kubeconfig the health gate reads.
type kubeconfigFile struct {
	CurrentContext string `json:"current-context"`
	Clusters       []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server        string `json:"server"`
			CA            string `json:"certificate-authority"`
			CAData        []byte `json:"certificate-authority-data"`
			Insecure      bool   `json:"insecure-skip-tls-verify"`
			TLSServerName string `json:"tls-server-name"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Cert         string          `json:"client-certificate"`
			CertData     []byte          `json:"client-certificate-data"`
			Key          string          `json:"client-key"`
			KeyData      []byte          `json:"client-key-data"`
			Token        string          `json:"token"`
			TokenFile    string          `json:"tokenFile"`
			Exec         json.RawMessage `json:"exec"`
			AuthProvider json.RawMessage `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
	Contexts []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
}

// apiClient is what a kubeconfig's current context says about reaching the API server.
type apiClient struct {
	server string
	tls    *tls.Config
	token  string
}

// ErrUnsupportedAuth is a kubeconfig whose user authenticates by a plugin (exec or
// auth-provider), which PID 1 does not run.
var ErrUnsupportedAuth = errors.New("the kubeconfig's user authenticates through a plugin (exec or auth-provider), which the health gate does not run")

// readKubeconfig reads the current context of the kubeconfig at path (YAML or JSON). Relative
// file names in it are relative to its directory, as kubectl takes them.
func readKubeconfig(path string) (*apiClient, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubelet kubeconfig: %w", err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	var kc kubeconfigFile
	if err := json.Unmarshal(js, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("kubeconfig %s: "+format, append([]any{path}, a...)...)
	}
	file := func(name string) (string, []byte, error) {
		if !filepath.IsAbs(name) {
			name = filepath.Join(filepath.Dir(path), name)
		}
		b, err := os.ReadFile(name)
		return name, b, err
	}
	ctxName := kc.CurrentContext
	if ctxName == "" && len(kc.Contexts) == 1 {
		ctxName = kc.Contexts[0].Name
	}
	var clusterName, userName string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == ctxName {
			clusterName, userName, found = c.Context.Cluster, c.Context.User, true
		}
	}
	if !found {
		return nil, bad("no context %q (current-context)", ctxName)
	}
	c := &apiClient{tls: &tls.Config{MinVersion: tls.VersionTLS12}}
	found = false
	for _, cl := range kc.Clusters {
		if cl.Name != clusterName {
			continue
		}
		found = true
		u, err := url.Parse(cl.Cluster.Server)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, bad("cluster %q: server %q is not an https URL", clusterName, cl.Cluster.Server)
		}
		c.server = strings.TrimSuffix(cl.Cluster.Server, "/")
		c.tls.ServerName = cl.Cluster.TLSServerName
		c.tls.InsecureSkipVerify = cl.Cluster.Insecure
		ca := cl.Cluster.CAData
		if len(ca) == 0 && cl.Cluster.CA != "" {
			name, b, err := file(cl.Cluster.CA)
			if err != nil {
				return nil, bad("cluster %q: certificate-authority %s: %v", clusterName, name, err)
			}
			ca = b
		}
		if len(ca) > 0 {
			c.tls.RootCAs = x509.NewCertPool()
			if !c.tls.RootCAs.AppendCertsFromPEM(ca) {
				return nil, bad("cluster %q: its certificate authority holds no PEM certificate", clusterName)
			}
		}
	}
	if !found {
		return nil, bad("no cluster %q (context %q)", clusterName, ctxName)
	}
	found = false
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		found = true
		usr := u.User
		if len(usr.Exec) > 0 && string(usr.Exec) != "null" || len(usr.AuthProvider) > 0 && string(usr.AuthProvider) != "null" {
			return nil, fmt.Errorf("kubeconfig %s: user %q: %w", path, userName, ErrUnsupportedAuth)
		}
		cert, key := usr.CertData, usr.KeyData
		for _, f := range []struct {
			name string
			data *[]byte
		}{{usr.Cert, &cert}, {usr.Key, &key}} {
			if len(*f.data) > 0 || f.name == "" {
				continue
			}
			name, b, err := file(f.name)
			if err != nil {
				return nil, bad("user %q: %s: %v", userName, name, err)
			}
			*f.data = b
		}
		if len(cert) > 0 || len(key) > 0 {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return nil, bad("user %q: client certificate: %v", userName, err)
			}
			c.tls.Certificates = []tls.Certificate{pair}
		}
		c.token = usr.Token
		if c.token == "" && usr.TokenFile != "" {
			name, b, err := file(usr.TokenFile)
			if err != nil {
				return nil, bad("user %q: tokenFile %s: %v", userName, name, err)
			}
			c.token = strings.TrimSpace(string(b))
		}
	}
	if !found {
		return nil, bad("no user %q (context %q)", userName, ctxName)
	}
	return c, nil
}
