# The platform `make up` brings up: 3 servers and 2 clients as processes on
# this machine, on 127.0.1.1-5, with every default. See README.md for every
# setting.
provider "local" {}
