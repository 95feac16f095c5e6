package cluster

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"time"
)

// BootstrapGroup is the extra group a bootstrap token's user is in, the one kubeadm's node
// join uses, so RBAC written for kubeadm clusters applies unchanged.
const BootstrapGroup = "system:bootstrappers:kubeadm:default-node-token"

// Token is a bootstrap token, "ID.SECRET" (see the Kubernetes bootstrap token docs).
type Token struct {
	ID, Secret string
}

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// NewToken generates a token from crypto/rand.
func NewToken() (Token, error) {
	id, err := randomToken(6)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomToken(16)
	if err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret}, nil
}

// ParseToken parses "ID.SECRET".
func ParseToken(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		return Token{}, fmt.Errorf("bootstrap token: want [a-z0-9]{6}.[a-z0-9]{16}")
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

func (t Token) String() string { return t.ID + "." + t.Secret }

// User is the name the API server authenticates the token as.
func (t Token) User() string { return "system:bootstrap:" + t.ID }

const tokenChars = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	// 252 is the largest multiple of 36 below 256: rejecting bytes above it keeps every
	// character equally likely.
	for i := 0; i < n; {
		var c [1]byte
		if _, err := rand.Read(c[:]); err != nil {
			return "", fmt.Errorf("generate bootstrap token: %w", err)
		}
		if c[0] < 252 {
			b[i] = tokenChars[int(c[0])%len(tokenChars)]
			i++
		}
	}
	return string(b), nil
}

// secretObject is the kube-system Secret the API server's bootstrap authenticator (and the
// controller manager's tokencleaner, at expiry) reads the token from.
func (t Token) secretObject(expires time.Time) map[string]any {
	return map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata":   map[string]any{"name": "bootstrap-token-" + t.ID, "namespace": "kube-system"},
		"type":       "bootstrap.kubernetes.io/token",
		"stringData": map[string]string{
			"description":                    "ingot cluster up: worker nodes join with it",
			"token-id":                       t.ID,
			"token-secret":                   t.Secret,
			"expiration":                     expires.UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              BootstrapGroup,
		},
	}
}

// CreateBootstrapToken generates a token and stores it in the cluster c administers, valid until
// expires. Tests give a time in the past to make the token a node meets when it joins long after
// the token was handed out: the API server refuses it.
func CreateBootstrapToken(ctx context.Context, c *Client, expires time.Time) (Token, error) {
	t, err := NewToken()
	if err != nil {
		return Token{}, err
	}
	if err := c.Create(ctx, "/api/v1/namespaces/kube-system/secrets", t.secretObject(expires)); err != nil {
		return Token{}, fmt.Errorf("create bootstrap token %s: %w", t.ID, err)
	}
	return t, nil
}
