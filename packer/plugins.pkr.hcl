# Plugins for current Packer (>= 1.7): `packer init packer/` installs them. Kept in its own file
# because Debian's Packer 1.6.6, which bundles both builders, rejects this block: it validates
# snapscan.pkr.hcl alone (`packer validate packer/snapscan.pkr.hcl`).
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "~> 1"
    }
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = "~> 1"
    }
  }
}
