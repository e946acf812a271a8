package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// remoteAEFlags is --remote-ae: where the gateway reaches an AE title it
// must open an association to (the storage commitment report of a
// modality that does not wait for it on its own association). Each value
// is AET=HOST:PORT with options tls=true, ca-file, client-cert, client-key
// (DICOM TLS, PS3.15 B.12) and timeout; parsed when set, so that a flags
// file's bad line is named at once.
type remoteAEFlags struct {
	specs []remoteAESpec
}

type remoteAESpec struct {
	AE     string
	Host   string
	Port   int
	Opts   map[string]string
	Origin string
}

// remoteAEOptions are the keys a --remote-ae value may set.
var remoteAEOptions = []string{"tls", "ca-file", "client-cert", "client-key", "timeout"}

// defaultRemoteTimeout bounds each exchange with a remote AE (dial and
// negotiation, the report and its response).
const defaultRemoteTimeout = 30 * time.Second

func parseRemoteAE(s string) (remoteAESpec, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return remoteAESpec{}, fmt.Errorf("empty: want AET=HOST:PORT [key=value ...]")
	}
	ae, addr, ok := strings.Cut(fields[0], "=")
	if !ok || ae == "" || addr == "" {
		return remoteAESpec{}, fmt.Errorf("%q: want AET=HOST:PORT [key=value ...]", fields[0])
	}
	if err := dimse.ValidAETitle(ae); err != nil {
		return remoteAESpec{}, fmt.Errorf("%q: %v", ae, err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return remoteAESpec{}, fmt.Errorf("%s: %q: want HOST:PORT ([v6]:PORT for an IPv6 address)", ae, addr)
	}
	// A host is a name or an address: "A=B=h:104" is not AE A at host
	// "B=h" (an AE title cannot hold '=' here).
	if _, ipErr := netip.ParseAddr(host); ipErr != nil && !validHostName(host) {
		return remoteAESpec{}, fmt.Errorf("%s: host %q is neither an IP address nor a host name (an AE title with '=' cannot be given here)", ae, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return remoteAESpec{}, fmt.Errorf("%s: port %q: want 1 to 65535", ae, port)
	}
	r := remoteAESpec{AE: ae, Host: host, Port: p, Opts: map[string]string{}}
	for _, kv := range fields[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return r, fmt.Errorf("%s: option %q: want key=value", ae, kv)
		}
		if !slices.Contains(remoteAEOptions, k) {
			return r, fmt.Errorf("%s: unknown option %q (one of %s)", ae, k, strings.Join(remoteAEOptions, ", "))
		}
		if _, dup := r.Opts[k]; dup {
			return r, fmt.Errorf("%s: option %q given twice", ae, k)
		}
		r.Opts[k] = v
	}
	return r, nil
}

// String is the value as it would be written again.
func (r remoteAESpec) String() string {
	out := r.AE + "=" + net.JoinHostPort(r.Host, strconv.Itoa(r.Port))
	keys := make([]string, 0, len(r.Opts))
	for k := range r.Opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out += " " + k + "=" + r.Opts[k]
	}
	return out
}

func (f *remoteAEFlags) String() string {
	out := make([]string, len(f.specs))
	for i, r := range f.specs {
		out[i] = r.String()
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func (f *remoteAEFlags) Type() string { return "remote-ae" }

func (f *remoteAEFlags) Set(s string) error {
	r, err := parseRemoteAE(s)
	if err != nil {
		return err
	}
	for _, o := range f.specs {
		if o.AE == r.AE {
			return fmt.Errorf("remote AE %s given twice (the other at %s)", r.AE, o.Origin)
		}
	}
	r.Origin = "command line"
	f.specs = append(f.specs, r)
	return nil
}

func (f *remoteAEFlags) setOrigin(where string) { f.specs[len(f.specs)-1].Origin = where }

// GetSlice is for check-config's listing (pflag.SliceValue).
func (f *remoteAEFlags) GetSlice() []string {
	out := make([]string, len(f.specs))
	for i, r := range f.specs {
		out[i] = r.String()
	}
	return out
}

func (f *remoteAEFlags) Append(s string) error { return f.Set(s) }

func (f *remoteAEFlags) Replace(ss []string) error {
	f.specs = nil
	for _, s := range ss {
		if err := f.Set(s); err != nil {
			return err
		}
	}
	return nil
}

// remoteAE is a checked --remote-ae: how to reach an AE title.
type remoteAE struct {
	AE      string
	Addr    string      // host:port
	TLS     *tls.Config // nil: plaintext
	Timeout time.Duration
	Origin  string
}

// remoteAEs checks every --remote-ae (certificates loaded, durations
// parsed) and returns them by AE title.
func (f *remoteAEFlags) remoteAEs() (map[string]remoteAE, error) {
	out := make(map[string]remoteAE, len(f.specs))
	for _, s := range f.specs {
		name := func(k string) string { return "--remote-ae " + s.AE + ": " + k }
		r := remoteAE{AE: s.AE, Addr: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Timeout: defaultRemoteTimeout, Origin: s.Origin}
		useTLS := false
		if v, ok := s.Opts["tls"]; ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %q is not true or false", s.Origin, name("tls"), v)
			}
			useTLS = b
		}
		if useTLS {
			cfg, err := clientTLS(s.Opts["ca-file"], s.Opts["client-cert"], s.Opts["client-key"], name)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Origin, err)
			}
			cfg.ServerName = s.Host
			r.TLS = cfg
		} else if s.Opts["ca-file"]+s.Opts["client-cert"]+s.Opts["client-key"] != "" {
			return nil, fmt.Errorf("%s: --remote-ae %s: ca-file, client-cert and client-key need tls=true", s.Origin, s.AE)
		}
		if v, ok := s.Opts["timeout"]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: %s: %q is not a positive duration", s.Origin, name("timeout"), v)
			}
			r.Timeout = d
		}
		out[s.AE] = r
	}
	return out, nil
}

// validHostName checks a DNS host name's syntax (RFC 1123 labels).
func validHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
