package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/dicomgw/dicomgw/pkg/part10"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// STOWConfig configures a STOW-RS destination.
type STOWConfig struct {
	// BaseURL is the DICOMweb service root, e.g.
	// http://127.0.0.1:8042/dicom-web or https://kheops.example/api; a
	// query string (KHEOPS ?album=...) is kept on every request.
	BaseURL string
	// Timeout bounds the wait for the response once the body is sent, and
	// is the base of each request's overall deadline, to which the body's
	// size at MinRate is added.
	Timeout time.Duration
	// MinRate is the slowest upload, in bytes per second, a request is
	// allowed before it times out.
	MinRate int64
	// RetryMax, RetryWaitMin and RetryWaitMax bound the retries made
	// within one delivery attempt (connection errors, 408, 429, 5xx),
	// before the object goes back to the durable retry schedule.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	// ImplementationClassUID and ImplementationVersionName go into the
	// file meta information of each part.
	ImplementationClassUID    string
	ImplementationVersionName string
	// UserAgent is sent with every request.
	UserAgent string
	// HTTPClient is the client to use (its transport, TLS settings...);
	// nil means a fresh one. Its redirect policy is replaced.
	HTTPClient *http.Client
	// TLS configures a fresh client's TLS (a private CA, a client
	// certificate); nil: the system's roots. Ignored with HTTPClient.
	TLS *tls.Config
	// Credentials, if set, authorize every request.
	Credentials Credentials
}

// STOW delivers objects with STOW-RS (PS3.18 10.5).
type STOW struct {
	cfg    STOWConfig
	base   *url.URL
	client *retryablehttp.Client
	log    *slog.Logger
}

// NewSTOW returns a STOW-RS destination.
func NewSTOW(cfg STOWConfig, log *slog.Logger) (*STOW, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("stow: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("stow: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if u.User != nil {
		return nil, errors.New("stow: put credentials in a credentials file, not in the base URL")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.MinRate <= 0 {
		cfg.MinRate = 1 << 20
	}
	if cfg.RetryMax < 0 {
		cfg.RetryMax = 0
	}
	if cfg.RetryWaitMin <= 0 {
		cfg.RetryWaitMin = time.Second
	}
	if cfg.RetryWaitMax <= 0 {
		cfg.RetryWaitMax = 30 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = cfg.Timeout
		if cfg.TLS != nil {
			tr.TLSClientConfig = cfg.TLS
		}
		hc = &http.Client{Transport: tr}
	} else {
		c := *hc
		hc = &c
	}
	if cfg.Credentials != nil {
		base := hc.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		hc.Transport = &authTransport{base: base, creds: cfg.Credentials}
	}
	hc.CheckRedirect = sameOriginRedirects
	s := &STOW{cfg: cfg, base: u, log: log}
	s.client = &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       nil,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.RetryMax,
		CheckRetry:   s.checkRetry,
		Backoff:      jitterBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, r *http.Request, attempt int) {
			if attempt > 0 {
				log.Debug("retrying STOW-RS request", "url", redact(r.URL), "attempt", attempt+1)
			}
		},
	}
	return s, nil
}

func (s *STOW) String() string { return "stow:" + redact(s.base) }

// redact drops the query string (it may carry an album token) from URLs in
// logs.
func redact(u *url.URL) string {
	c := *u
	c.RawQuery, c.User = "", nil
	return c.String()
}

// sameOriginRedirects follows a redirect only to the same scheme, host and
// port (credentials must not travel to another origin), and only one that
// keeps the method (307, 308): after a 301, 302 or 303 net/http would send
// a GET without the body, and a DICOMweb server answers GET .../studies
// (QIDO-RS) with a 200 that would read as "all stored". The redirect
// response itself is returned instead, and pauses the destination.
func sameOriginRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	if o := via[0]; req.URL.Scheme != o.URL.Scheme || req.URL.Host != o.URL.Host || req.Method != o.Method {
		return http.ErrUseLastResponse
	}
	return nil
}

// url builds {base}/studies or {base}/studies/{study}, keeping the query.
func (s *STOW) url(study string) string {
	u := *s.base
	p := strings.TrimRight(u.Path, "/") + "/studies"
	if study != "" {
		p += "/" + study
	}
	u.Path, u.RawPath = p, ""
	return u.String()
}

// Deliver sends objs in one STOW-RS request and reads the answer per
// instance.
func (s *STOW) Deliver(ctx context.Context, objs []*Object) []Result {
	study := objs[0].StudyInstanceUID
	for _, o := range objs[1:] {
		if o.StudyInstanceUID != study {
			study = ""
		}
	}
	if study != "" && uid.Valid(study) != nil {
		study = "" // never put a malformed UID in a URL path ("..", "1..2" included)
	}
	parts := make([]part, len(objs))
	var size int64
	for i, o := range objs {
		parts[i] = part{
			header: part10.AppendMeta(nil, &part10.Meta{
				SOPClassUID: o.SOPClassUID, SOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: o.TransferSyntaxUID,
				ImplementationClassUID: s.cfg.ImplementationClassUID, ImplementationVersionName: s.cfg.ImplementationVersionName,
				SourceAE: o.CallingAE,
			}),
			open: o.Open, n: o.DataSize,
		}
		size += o.DataSize
	}
	// One request, or a few if a boundary turns up inside an object, or
	// once more with fresh credentials after a 401.
	refreshed := false
	for try := 0; ; try++ {
		res, failed, err := s.post(ctx, study, parts, size)
		if failed != nil {
			return partFailure(objs, failed)
		}
		if errors.Is(err, errBoundaryInPayload) && try < 3 {
			continue
		}
		if err != nil {
			return all(objs, s.failure(ctx, err))
		}
		if res.status == http.StatusUnauthorized && !refreshed && s.cfg.Credentials != nil {
			refreshed = true
			s.cfg.Credentials.Refresh(ctx)
			s.log.Warn("STOW-RS answered 401; trying once more with refreshed credentials", "credentials", s.cfg.Credentials.Kind())
			continue
		}
		return res.results(objs)
	}
}

// partFailure is the outcome of a request abandoned because one of its
// objects could not be read from the spool: that one is quarantined if
// its copy is damaged (it was never sent whole: the request did not
// complete) or retried; the others were not sent and go again at once.
func partFailure(objs []*Object, pe *partError) []Result {
	out := all(objs, Result{Outcome: Abandoned, Reason: "not sent: another object of its batch could not be read from the spool"})
	if errors.Is(pe.err, ErrDamaged) {
		out[pe.index] = Result{Outcome: Dead, Damaged: true, Reason: pe.err.Error()}
	} else {
		out[pe.index] = Result{Outcome: Retry, Reason: "cannot read the object from the spool: " + pe.err.Error()}
	}
	return out
}

// CredentialVersion changes whenever the credentials do (0 without
// credentials): the forwarder resumes a destination paused for its
// credentials as soon as they are replaced.
func (s *STOW) CredentialVersion() uint64 {
	if s.cfg.Credentials == nil {
		return 0
	}
	return s.cfg.Credentials.Version()
}

func all(objs []*Object, r Result) []Result {
	out := make([]Result, len(objs))
	for i := range out {
		out[i] = r
	}
	return out
}

// failure is the result for a request that got no HTTP answer.
func (s *STOW) failure(ctx context.Context, err error) Result {
	if ctx.Err() != nil {
		return Result{Outcome: Abandoned, Reason: "shutting down"}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Result{Outcome: Retry, Reason: "STOW-RS request timed out"}
	}
	return Result{Outcome: Retry, Reason: "STOW-RS request failed: " + s.scrub(err.Error())}
}

// scrub removes the base URL's query string from a message: net/http and
// retryablehttp put the request URL, query and all, into their errors, and
// the query may carry an album or access token (KHEOPS). The message goes
// to the log and the durable retry record, so it must not.
func (s *STOW) scrub(msg string) string {
	if q := s.base.RawQuery; q != "" {
		msg = strings.ReplaceAll(msg, "?"+q, "")
		msg = strings.ReplaceAll(msg, q, "[query]")
	}
	return msg
}

// post sends one request (with retryablehttp's own retries) and reads the
// answer. When an object could not be read from the spool, the request is
// abandoned and post says which (failed).
func (s *STOW) post(ctx context.Context, study string, parts []part, size int64) (*stowAnswer, *partError, error) {
	boundary := newBoundary()
	var last *multipartBody
	body := func() (io.Reader, error) {
		last = newMultipartBody(boundary, parts)
		return last, nil
	}
	deadline := s.cfg.Timeout + time.Duration(size/s.cfg.MinRate)*time.Second
	rctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	req, err := retryablehttp.NewRequestWithContext(rctx, http.MethodPost, s.url(study), retryablehttp.ReaderFunc(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", mime.FormatMediaType("multipart/related", map[string]string{"type": "application/dicom", "boundary": boundary}))
	req.Header.Set("Accept", "application/dicom+json")
	if s.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", s.cfg.UserAgent)
	}
	resp, err := s.client.Do(req)
	if last != nil && last.failed != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, last.failed, nil
	}
	if err != nil && resp == nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	a, err := readAnswer(resp, answerLimit(len(parts)))
	return a, nil, err
}

// checkRetry decides whether retryablehttp tries again within this
// attempt: on connection errors and 408, 429, 5xx, unless the endpoint asks
// for a wait longer than RetryWaitMax (then the durable schedule takes
// over), and never for a boundary collision or a cancelled request.
func (s *STOW) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var pe *partReadError
		if errors.Is(err, errBoundaryInPayload) || errors.As(err, &pe) {
			return false, err // sending the same bytes again cannot help
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	switch c := resp.StatusCode; {
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500 && c != http.StatusNotImplemented:
		ra, ok := retryAfter(resp)
		if ok && ra > s.cfg.RetryWaitMax {
			return false, nil
		}
		// A wait that would outlast the request's deadline ends the
		// attempt too, with the answer (and its Retry-After) in hand,
		// rather than with a timeout that forgets both.
		if dl, has := ctx.Deadline(); ok && has && time.Until(dl) <= ra {
			return false, nil
		}
		return true, nil
	}
	return false, nil
}

// jitterBackoff honours Retry-After, else waits min·2^attempt capped at
// max, less a random part of up to half, so that clients that failed
// together do not come back together.
func jitterBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if ra, ok := retryAfter(resp); ok {
		return ra
	}
	return backoff(attempt+1, lo, hi)
}
