# The dissertation's MobileID PKI (section 5.2.2, figure 14) as application
# CAs: nothing in bootstrap knows about MobileID; these are generic `ca`
# blocks.
provider "local" {}

pki {
  # mdoc readers: one root; each organisation of authorised readers gets an
  # intermediate under it, which issues the certificates its readers present
  # when they request an mdoc from a holder. Adding an organisation is adding
  # an intermediate and its role here and running `bootstrap up` again.
  ca "mdl-reader" {
    common_name = "MobileID mdoc Reader Root CA"

    intermediate "org-utopia-police" {
      common_name = "Utopia Police Reader CA"
    }
    intermediate "org-utopia-bank" {
      common_name = "Utopia Bank Reader CA"
      ttl         = "17520h"
    }

    role "utopia-police-reader" {
      issuer         = "org-utopia-police"
      allow_any_name = true
      client_flag    = true
      key_usage      = ["DigitalSignature"]
      ttl            = "720h"
    }
    role "utopia-bank-reader" {
      issuer         = "org-utopia-bank"
      allow_any_name = true
      client_flag    = true
      key_usage      = ["DigitalSignature"]
      ttl            = "720h"
    }
  }

  # The issuing authority (IACA): a root that signs the leaf certificates of
  # ISO 18013-5 Annex B directly, one role per certificate profile.
  ca "mdl-iaca" {
    common_name = "MobileID Issuing Authority CA"

    role "document-signer" {
      allow_any_name = true
      key_usage      = ["DigitalSignature"]
      ttl            = "8760h"
    }
    role "jws-signer" {
      allow_any_name = true
      key_usage      = ["DigitalSignature"]
      ttl            = "8760h"
    }
    role "ocsp-signer" {
      allow_any_name = true
      key_usage      = ["DigitalSignature"]
      ext_key_usage  = ["OCSPSigning"]
      ttl            = "720h"
    }
    role "association" {
      allowed_domains  = ["association.mobileid.example"]
      allow_subdomains = true
      server_flag      = true
      client_flag      = true
      ttl              = "720h"
    }
  }

  # The Django backend issues from both chains and nothing else.
  approle "django-backend" {
    cas       = ["mdl-reader", "mdl-iaca"]
    token_ttl = "1h"
  }
}
