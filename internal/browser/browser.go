// Package browser looks at the platform's web UIs the way a person does: a
// headless Chromium, driven through the DevTools protocol, signs in, waits
// for what the page renders and takes screenshots.
//
// The checks read the rendered DOM, not HTTP status codes: a binary built
// without its UI answers 200 too.
package browser

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// ExecPath finds Chromium: $BOOTSTRAP_CHROMIUM, then chromium or
// chromium-browser on PATH (Debian's package is chromium).
func ExecPath() (string, error) {
	if p := os.Getenv("BOOTSTRAP_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium found: apt-get install chromium (make tools does), or set BOOTSTRAP_CHROMIUM")
}

// Browser is one headless Chromium. Its pages share cookies and local
// storage, as the tabs of one person's browser do.
type Browser struct {
	ctx    context.Context // a chromedp context whose browser runs
	cancel context.CancelFunc
	// Dir receives a PNG per screenshot; none are written when empty.
	Dir string
}

// Start starts Chromium. It accepts a server's certificate only when the
// chain the server sends holds a certificate of the CA files (PEM) given, as
// the platform's agents send their issuing CA: a person imports the
// platform's CA; Chromium's equivalent without a certificate store is a
// list of trusted public keys.
func Start(ctx context.Context, caFiles ...string) (*Browser, error) {
	path, err := ExecPath()
	if err != nil {
		return nil, err
	}
	spki, err := spkiHashes(caFiles)
	if err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Chromium's sandbox needs user namespaces, which root in a
		// container does not have.
		chromedp.NoSandbox,
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("lang", "en-US"),
	)
	if spki != "" {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", spki))
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	// The first Do starts the browser, which lives as long as bctx.
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return &Browser{ctx: bctx, cancel: func() { bcancel(); acancel() }}, nil
}

// Close stops Chromium (chromedp kills the process it started, by its pid)
// and removes its profile directory.
func (b *Browser) Close() { b.cancel() }

// spkiHashes returns Chromium's form of the CAs' public keys: base64 of the
// SHA-256 of each SubjectPublicKeyInfo, comma-separated.
func spkiHashes(files []string) (string, error) {
	var hashes []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read CA: %w", err)
		}
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return "", fmt.Errorf("%s: %w", f, err)
			}
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			hashes = append(hashes, base64.StdEncoding.EncodeToString(sum[:]))
		}
	}
	return strings.Join(hashes, ","), nil
}

// stepTimeout bounds one step (open, type, click) that has no timeout of
// its own: single-page apps on a loaded 2-core machine take seconds.
const stepTimeout = 90 * time.Second

// Page is one tab.
type Page struct {
	b      *Browser
	ctx    context.Context
	cancel context.CancelFunc
}

// NewPage opens a tab; Close it when done.
func (b *Browser) NewPage() (*Page, error) {
	ctx, cancel := chromedp.NewContext(b.ctx)
	// The tab lives as long as the context of its first action: open it
	// here, not under the deadline of some later step.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("open a tab: %w", err)
	}
	return &Page{b: b, ctx: ctx, cancel: cancel}, nil
}

// Close closes the tab.
func (p *Page) Close() { p.cancel() }

// Open navigates to url and waits for the document to load.
func (p *Page) Open(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	ctx, stop := p.bound(ctx)
	defer stop()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		return fmt.Errorf("open %s: %w", url, err)
	}
	if resp != nil && resp.Status >= 400 {
		return fmt.Errorf("open %s: HTTP %d", url, resp.Status)
	}
	return nil
}

// bound runs the tab's actions under ctx's deadline and cancellation.
func (p *Page) bound(ctx context.Context) (context.Context, func()) {
	c, cancel := context.WithCancel(p.ctx)
	stop := context.AfterFunc(ctx, cancel)
	if d, ok := ctx.Deadline(); ok {
		var cancelT context.CancelFunc
		c, cancelT = context.WithDeadline(c, d)
		return c, func() { stop(); cancelT(); cancel() }
	}
	return c, func() { stop(); cancel() }
}

// Eval evaluates a JavaScript expression and decodes its value into v
// (when not nil); a Promise (a fetch) is awaited first.
func (p *Page) Eval(ctx context.Context, expr string, v any) error {
	ctx, stop := p.bound(ctx)
	defer stop()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// Text returns the text the page shows.
func (p *Page) Text(ctx context.Context) string {
	var s string
	if err := p.Eval(ctx, `document.body ? document.body.innerText : ""`, &s); err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// WaitFor waits until the JavaScript expression is true. On timeout the
// error tells what the page showed, and what.
func (p *Page) WaitFor(ctx context.Context, what, expr string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	// A poll does not survive a navigation (a login that reloads the app):
	// poll again in the new document until the time is up.
	for wctx.Err() == nil {
		c, stop := p.bound(wctx)
		_, err = chromedp.Run(c, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
		stop()
		if err == nil {
			return nil
		}
		select {
		case <-wctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: not within %s (%v); the page shows: %s", what, timeout, err, p.shows(ctx))
}

// WaitText waits until the page shows every text.
func (p *Page) WaitText(ctx context.Context, timeout time.Duration, texts ...string) error {
	conds := []string{"document.body"}
	for _, t := range texts {
		q, _ := json.Marshal(t)
		conds = append(conds, fmt.Sprintf("document.body.innerText.includes(%s)", q))
	}
	return p.WaitFor(ctx, fmt.Sprintf("the page shows %q", texts),
		strings.Join(conds, " && "), timeout)
}

// Count returns how many elements match the CSS selector.
func (p *Page) Count(ctx context.Context, css string) (int, error) {
	q, _ := json.Marshal(css)
	var n int
	err := p.Eval(ctx, fmt.Sprintf("document.querySelectorAll(%s).length", q), &n)
	return n, err
}

// Type types text into the element matched by css, as keystrokes.
func (p *Page) Type(ctx context.Context, css, text string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	ctx, stop := p.bound(ctx)
	defer stop()
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(css), text, chromedp.NodeVisible)); err != nil {
		return fmt.Errorf("type into %s: %w; the page shows: %s", css, err, p.shows(ctx))
	}
	return nil
}

// Click clicks the element matched by css.
func (p *Page) Click(ctx context.Context, css string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	ctx, stop := p.bound(ctx)
	defer stop()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(css), chromedp.NodeVisible)); err != nil {
		return fmt.Errorf("click %s: %w; the page shows: %s", css, err, p.shows(ctx))
	}
	return nil
}

// Screenshot writes the visible page to Dir/name.png (nothing when Dir is
// empty) and returns the PNG.
func (p *Page) Screenshot(ctx context.Context, name string) ([]byte, error) {
	ctx, stop := p.bound(ctx)
	defer stop()
	// Only the tab in front draws frames, and a capture waits for one.
	front := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.BringToFront, cdp.Empty{})
		return err
	})
	if err := chromedp.Do(ctx, front); err != nil {
		return nil, fmt.Errorf("screenshot %s: %w", name, err)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return nil, fmt.Errorf("screenshot %s: %w", name, err)
	}
	if p.b.Dir == "" {
		return png, nil
	}
	if err := os.MkdirAll(p.b.Dir, 0o755); err != nil {
		return nil, err
	}
	return png, os.WriteFile(filepath.Join(p.b.Dir, name+".png"), png, 0o644)
}

// shows tells what the page shows, for an error: with its own few seconds,
// as ctx may be what ran out.
func (p *Page) shows(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return excerpt(p.Text(ctx))
}

func excerpt(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// ClickText clicks the first visible button or link that reads text, as a
// person picks a button by its label.
func (p *Page) ClickText(ctx context.Context, text string) error {
	q, _ := json.Marshal(text)
	expr := fmt.Sprintf(`(() => {
  const e = Array.from(document.querySelectorAll("button, a, [role=button]"))
    .find(e => e.offsetParent !== null && e.innerText.trim() === %s);
  if (!e) return false;
  e.click();
  return true;
})()`, q)
	if err := p.WaitFor(ctx, fmt.Sprintf("a button %q", text), expr, stepTimeout); err != nil {
		return err
	}
	return nil
}
