module bootstrap-tools/fetch

go 1.26

require (
	github.com/hashicorp/go-version v1.9.0
	github.com/hashicorp/hc-install v0.9.2
)

require (
	github.com/ProtonMail/go-crypto v1.1.6 // indirect
	github.com/cloudflare/circl v1.6.0 // indirect
	github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
	github.com/hashicorp/go-retryablehttp v0.7.7 // indirect
	golang.org/x/crypto v0.35.0 // indirect
	golang.org/x/mod v0.24.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
)
