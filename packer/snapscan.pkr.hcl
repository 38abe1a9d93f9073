# The snapscan scanner image: one build, two sources.
#
#   googlecompute.scanner  production: a GCE image from a Debian 12 image family.
#     packer init packer/ && packer build -only=googlecompute.scanner \
#       -var project_id=my-project -var zone=europe-west1-b packer/
#   qemu.scanner           local pipeline test: a qcow2/raw image from a locally built base
#                          image (a Debian 12 disk image with sshd, see the README).
#     packer build -only=qemu.scanner -var base_image=/path/base.img \
#       -var ssh_private_key_file=/path/key packer/
#
# Both copy the snapscan binary and image/ to the machine and run image/install.sh, the script
# every builder shares. Build the binary first: cargo build --release -p snapscan.

variable "snapscan_binary" {
  type        = string
  default     = "target/release/snapscan"
  description = "The snapscan binary to install (relative to where packer runs: the repository root)."
}

variable "qscanner_binary" {
  type        = string
  default     = ""
  description = "A Qualys qscanner binary to install as the default scanner; empty: the built-in scanner."
}

# --- googlecompute ---
variable "project_id" {
  type        = string
  default     = ""
  description = "GCP project that builds and owns the image."
}

variable "zone" {
  type    = string
  default = "europe-west1-b"
}

variable "source_image_family" {
  type    = string
  default = "debian-12"
}

variable "source_image_project_id" {
  type    = string
  default = "debian-cloud"
}

variable "image_family" {
  type    = string
  default = "snapscan-scanner"
}

variable "image_name" {
  type        = string
  default     = ""
  description = "Empty: snapscan-scanner-<timestamp>. Must match ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$."
}

variable "network" {
  type    = string
  default = ""
}

variable "subnetwork" {
  type    = string
  default = ""
}

variable "service_account_email" {
  type        = string
  default     = ""
  description = "Service account of the build VM (empty: the project's default)."
}

variable "use_iap" {
  type        = bool
  default     = false
  description = "Reach the build VM over IAP TCP forwarding (no external IP needed)."
}

variable "machine_type" {
  type    = string
  default = "e2-standard-2"
}

# --- qemu ---
variable "base_image" {
  type        = string
  default     = "base.img"
  description = "A local Debian 12 raw disk image with sshd and the build user."
}

variable "base_image_format" {
  type    = string
  default = "raw"
}

variable "accelerator" {
  type        = string
  default     = "tcg"
  description = "kvm where /dev/kvm works, else tcg (software emulation)."
}

variable "ssh_username" {
  type    = string
  default = "packer"
}

variable "ssh_private_key_file" {
  type    = string
  default = ""
}

variable "qemuargs" {
  type        = list(list(string))
  default     = []
  description = "Extra QEMU arguments, e.g. [[\"-kernel\", \"vmlinuz\"], [\"-initrd\", \"initrd.img\"], [\"-append\", \"root=/dev/vda\"]] to boot a base image that has no boot loader."
}

variable "install_packages" {
  type        = bool
  default     = true
  description = "Let install.sh apt-get the runtime packages (false: the base image has them)."
}

variable "output_directory" {
  type    = string
  default = "packer-output"
}

locals {
  timestamp  = regex_replace(timestamp(), "[- TZ:]", "")
  image_name = var.image_name != "" ? var.image_name : "snapscan-scanner-${local.timestamp}"
}

source "googlecompute" "scanner" {
  project_id              = var.project_id
  zone                    = var.zone
  source_image_family     = var.source_image_family
  source_image_project_id = [var.source_image_project_id]
  image_name              = local.image_name
  image_family            = var.image_family
  image_description       = "snapscan agentless disk scanner"
  network                 = var.network
  subnetwork              = var.subnetwork
  service_account_email   = var.service_account_email
  use_iap                 = var.use_iap
  machine_type            = var.machine_type
  disk_size               = 20
  ssh_username            = var.ssh_username
  # Guest attributes for the agent's status, on the build VM as on every scanner VM.
  metadata = {
    enable-guest-attributes = "TRUE"
  }
}

source "qemu" "scanner" {
  disk_image           = true
  iso_url              = var.base_image
  iso_checksum         = "none"
  format               = var.base_image_format
  accelerator          = var.accelerator
  headless             = true
  disk_size            = "4G"
  memory               = 1024
  net_device           = "virtio-net"
  disk_interface       = "virtio"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "20m"
  shutdown_command     = "sudo systemctl poweroff"
  qemuargs             = var.qemuargs
  output_directory     = var.output_directory
  vm_name              = "${local.image_name}.img"
}

build {
  sources = ["source.googlecompute.scanner", "source.qemu.scanner"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/snapscan-image"]
  }

  provisioner "file" {
    sources = concat(
      ["image/install.sh", "image/agent.toml", "image/65-snapscan-gce-disk-naming.rules",
      "systemd/snapscan-agent.service", var.snapscan_binary],
      var.qscanner_binary != "" ? [var.qscanner_binary] : []
    )
    destination = "/tmp/snapscan-image/"
    # The binary is built before `packer build`, not before `packer validate`: check that it
    # exists when it is uploaded.
    generated = true
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "set -e",
      "cd /tmp/snapscan-image",
      "sh ./install.sh --binary ./${basename(var.snapscan_binary)} ${var.qscanner_binary != "" ? "--qscanner ./${basename(var.qscanner_binary)}" : ""} ${var.install_packages ? "" : "--no-packages"}",
      "rm -rf /tmp/snapscan-image",
    ]
  }
}
