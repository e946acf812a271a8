package dimse

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// Policy says who may associate: the AE titles the gateway answers to, and
// the calling AE titles it accepts. It can be replaced while the server runs
// (Server.SetPolicy); associations already established keep going.
type Policy struct {
	// AETitles are the called AE titles answered to. Must not be empty.
	AETitles []string
	// CalledAE, when set, accepts called AE titles beyond AETitles (those
	// a route selects on: a gateway that routes by called AE answers to
	// every title its routes can match).
	CalledAE func(ae string) bool
	// CallingAEs lists who may send; empty means anyone.
	CallingAEs []CallingAE
}

// CallingAE is one allowlist entry: an AE title, optionally bound to the
// addresses it must come from or to the client certificate it must present.
type CallingAE struct {
	AE       string
	Prefixes []netip.Prefix // empty: from anywhere
	// CertSubject, when set, must be the subject common name (or a DNS
	// name) of the verified TLS client certificate: the entry matches only
	// on a TLS port that requires client certificates.
	CertSubject string
	Spec        string // as written, for logs
}

// Bound reports whether the entry asks for more than the AE title.
func (c *CallingAE) Bound() bool { return len(c.Prefixes) > 0 || c.CertSubject != "" }

// ParseCallingAE reads an allowlist entry: "AE", "AE@host" (resolved now to
// its addresses), "AE@cidr" (e.g. CT1@10.0.0.0/8, CT1@::1/128) or
// "AE@cn=SUBJECT" (a TLS client certificate, e.g. CT1@cn=ct1.hospital).
func ParseCallingAE(ctx context.Context, spec string) (CallingAE, error) {
	ae, where, bound := strings.Cut(spec, "@")
	c := CallingAE{AE: ae, Spec: spec}
	if err := ValidAETitle(ae); err != nil {
		return c, fmt.Errorf("calling AE %q: %w", spec, err)
	}
	if !bound {
		return c, nil
	}
	if where == "" {
		return c, fmt.Errorf("calling AE %q: nothing after @", spec)
	}
	if subj, ok := cutPrefixFold(where, "cn="); ok {
		if subj == "" {
			return c, fmt.Errorf("calling AE %q: empty certificate subject", spec)
		}
		c.CertSubject = subj
		return c, nil
	}
	if p, err := netip.ParsePrefix(where); err == nil {
		c.Prefixes = []netip.Prefix{p.Masked()}
		return c, nil
	}
	if a, err := netip.ParseAddr(where); err == nil {
		c.Prefixes = []netip.Prefix{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", where)
	if err != nil {
		return c, fmt.Errorf("calling AE %q: %q is neither an address, a CIDR nor a host that resolves: %w", spec, where, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		c.Prefixes = append(c.Prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return c, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// allows reports whether this entry lets ae in from addr with cert (the
// verified client certificate, nil when there is none).
func (c *CallingAE) allows(ae string, addr netip.Addr, cert *x509.Certificate) bool {
	if c.AE != ae {
		return false
	}
	if c.CertSubject != "" {
		return certMatches(cert, c.CertSubject)
	}
	if len(c.Prefixes) == 0 {
		return true
	}
	for _, p := range c.Prefixes {
		if p.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

func (p *Policy) validate() error {
	if len(p.AETitles) == 0 {
		return fmt.Errorf("dimse: no AE title configured")
	}
	for _, ae := range p.AETitles {
		if err := ValidAETitle(ae); err != nil {
			return err
		}
	}
	// An AE title bound to a host or a certificate must not also be let in
	// on its title alone: the title is no proof of identity.
	bound, unbound := map[string]string{}, map[string]bool{}
	for _, c := range p.CallingAEs {
		if c.Bound() {
			bound[c.AE] = c.Spec
		} else {
			unbound[c.AE] = true
		}
	}
	for ae, spec := range bound {
		if unbound[ae] {
			return fmt.Errorf("dimse: calling AE %q is listed both alone and as %q: the bare title would let anyone claiming it in", ae, spec)
		}
	}
	return nil
}

// policy is the compiled form the server consults.
type policy struct {
	Policy
	called map[string]bool
}

func compile(p Policy) (*policy, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	c := &policy{Policy: p, called: make(map[string]bool)}
	for _, ae := range p.AETitles {
		c.called[pdu.MakeAE(ae).String()] = true
	}
	return c, nil
}

// callingAllowed reports whether the calling AE may associate from addr
// with cert.
func (p *policy) callingAllowed(ae string, addr netip.Addr, cert *x509.Certificate) bool {
	if len(p.CallingAEs) == 0 {
		return true
	}
	for i := range p.CallingAEs {
		if p.CallingAEs[i].allows(ae, addr, cert) {
			return true
		}
	}
	return false
}

// Known reports whether ae is in the calling AE allowlist: only those are
// worth a metric label of their own (the rest are "other").
func (p *Policy) Known(ae string) bool {
	for _, c := range p.CallingAEs {
		if c.AE == ae {
			return true
		}
	}
	return false
}

// SetPolicy replaces the policy for associations negotiated from now on.
func (s *Server) SetPolicy(p Policy) error {
	c, err := compile(p)
	if err != nil {
		return err
	}
	s.policy.Store(c)
	return nil
}

// Policy returns the policy in force.
func (s *Server) Policy() Policy { return s.policy.Load().Policy }
