package main

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// A destination is written on one line, as a flag value:
//
//	--destination NAME=URL [key=value ...]
//
//	--destination research=https://kheops.example/api?album=X token-file=/etc/dicomgw/research.token workers=2
//	--destination pacs=dicom://PACS@10.0.0.5:104 calling-ae=original
//	--destination copy=file:///srv/dicom/archive
//
// The URL's scheme says what kind it is: http(s) a DICOMweb service
// (STOW-RS), dicom or dicoms (DICOM TLS) another DICOM node (C-STORE),
// file a local archive directory. The options are the per-destination
// forms of the global flags (see destinationOptions); values cannot hold
// spaces (URLs cannot either).

// destKind is what a destination's URL scheme makes it.
type destKind string

const (
	kindSTOW    destKind = "stow"
	kindDICOM   destKind = "dicom"
	kindArchive destKind = "archive"
)

// destNamePattern is what a destination may be called: it is a metric
// label value, a word in routes and a command-line argument.
var destNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// defaultDestination is the name of the destination the legacy flags
// (--stow-url, or --archive-dir without it) describe.
const defaultDestination = "default"

// destinationOptions are the keys a destination line may set, by kind;
// each is the per-destination form of the global flag in the comment.
var destinationOptions = map[destKind][]string{
	kindSTOW: {
		"token-file", "basic-auth-file", // --stow-token-file, --stow-basic-auth-file
		"oauth2-token-url", "oauth2-client-id", "oauth2-client-secret-file", "oauth2-scopes", // --stow-oauth2-*
		"ca-file", "client-cert", "client-key", "insecure-skip-verify", // --stow-ca-file, --stow-client-cert/-key, --stow-insecure-skip-verify
		"timeout", // --stow-timeout
	},
	kindDICOM: {
		"calling-ae",                           // ours (--ae-title's first), original (the sender's), or an AE title
		"ca-file", "client-cert", "client-key", // dicoms: trust and client certificate
		"timeout", // per DIMSE exchange
	},
	kindArchive: {},
}

// commonOptions apply to every kind: the forwarder's per-destination
// settings (--forward-workers, --batch-*, --retry-*).
var commonOptions = []string{"workers", "batch-max-instances", "batch-max-bytes", "batch-linger", "retry-for", "retry-min", "retry-max"}

// destSpec is one --destination line, parsed (not yet checked against
// the rest of the configuration).
type destSpec struct {
	Name   string
	URL    *url.URL
	Kind   destKind
	Opts   map[string]string
	Origin string // "file:line" or "command line"
}

// redacted is the line without secrets: the URL's query string (a KHEOPS
// album) is left out; options name files, never secrets.
func (d destSpec) redacted() string {
	u := *d.URL
	if u.RawQuery != "" {
		u.RawQuery = "[query]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s", d.Name, u.String())
	keys := make([]string, 0, len(d.Opts))
	for k := range d.Opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, d.Opts[k])
	}
	return b.String()
}

// parseDestination reads NAME=URL [key=value ...].
func parseDestination(s string) (destSpec, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return destSpec{}, fmt.Errorf("empty: want NAME=URL [key=value ...]")
	}
	name, raw, ok := strings.Cut(fields[0], "=")
	if !ok || raw == "" {
		return destSpec{}, fmt.Errorf("%q: want NAME=URL [key=value ...]", fields[0])
	}
	if !destNamePattern.MatchString(name) {
		return destSpec{}, fmt.Errorf("destination name %q: want 1 to 32 of a-z, 0-9, '_' and '-', beginning with a letter or digit", name)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return destSpec{}, fmt.Errorf("destination %s: %v", name, err)
	}
	d := destSpec{Name: name, URL: u, Opts: map[string]string{}}
	switch u.Scheme {
	case "http", "https":
		d.Kind = kindSTOW
		if u.Host == "" {
			return d, fmt.Errorf("destination %s: %q has no host", name, raw)
		}
		if u.User != nil {
			return d, fmt.Errorf("destination %s: put credentials in a token-file or basic-auth-file option, not in the URL", name)
		}
	case "dicom", "dicoms":
		d.Kind = kindDICOM
		if u.User == nil || u.User.Username() == "" || u.Port() == "" || u.Hostname() == "" {
			return d, fmt.Errorf("destination %s: %q: want %s://CALLED_AE@HOST:PORT", name, raw, u.Scheme)
		}
		if _, hasPass := u.User.Password(); hasPass || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return d, fmt.Errorf("destination %s: %q: want %s://CALLED_AE@HOST:PORT and nothing else", name, raw, u.Scheme)
		}
	case "file":
		d.Kind = kindArchive
		if u.Host != "" && u.Host != "localhost" || u.Path == "" || !strings.HasPrefix(u.Path, "/") || u.RawQuery != "" {
			return d, fmt.Errorf("destination %s: %q: want file:///ABSOLUTE/DIR", name, raw)
		}
	default:
		return d, fmt.Errorf("destination %s: scheme %q: want http(s):// (STOW-RS), dicom(s):// (C-STORE) or file:/// (archive)", name, u.Scheme)
	}
	for _, kv := range fields[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || v == "" {
			return d, fmt.Errorf("destination %s: option %q: want key=value", name, kv)
		}
		if !slices.Contains(commonOptions, k) && !slices.Contains(destinationOptions[d.Kind], k) {
			valid := append(slices.Clone(commonOptions), destinationOptions[d.Kind]...)
			return d, fmt.Errorf("destination %s: unknown option %q for a %s destination (one of %s)", name, k, d.Kind, strings.Join(valid, ", "))
		}
		if _, dup := d.Opts[k]; dup {
			return d, fmt.Errorf("destination %s: option %q given twice", name, k)
		}
		d.Opts[k] = v
	}
	return d, nil
}

// destFlags is --destination: repeatable, each value a destSpec.
type destFlags struct {
	specs []destSpec
}

func (f *destFlags) String() string {
	out := make([]string, len(f.specs))
	for i, d := range f.specs {
		out[i] = d.redacted()
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func (f *destFlags) Type() string { return "destination" }

func (f *destFlags) Set(s string) error {
	d, err := parseDestination(s)
	if err != nil {
		return err
	}
	for _, o := range f.specs {
		if o.Name == d.Name {
			return fmt.Errorf("destination %s defined twice (the other at %s)", d.Name, o.Origin)
		}
	}
	d.Origin = "command line"
	f.specs = append(f.specs, d)
	return nil
}

// setOrigin records where the last value came from (a flags file line).
func (f *destFlags) setOrigin(where string) { f.specs[len(f.specs)-1].Origin = where }

// GetSlice is for check-config's listing (pflag.SliceValue).
func (f *destFlags) GetSlice() []string {
	out := make([]string, len(f.specs))
	for i, d := range f.specs {
		out[i] = d.redacted()
	}
	return out
}

func (f *destFlags) Append(s string) error     { return f.Set(s) }
func (f *destFlags) Replace(ss []string) error { f.specs = nil; return f.apply(ss) }

func (f *destFlags) apply(ss []string) error {
	for _, s := range ss {
		if err := f.Set(s); err != nil {
			return err
		}
	}
	return nil
}
