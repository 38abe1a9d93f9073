# An image pipeline gated by snapscan: Packer builds a golden image (qemu builder, qcow2), and a
# shell-local post-processor scans the artifact with `snapscan scan --policy`, storing the SBOM
# and report.json in <scan_directory> beside it. A policy violation exits 5, which fails the
# post-processor and so the build (Packer then deletes the artifact; the report stays).
#
#   packer build -var base_image=/path/debian-12.qcow2 \
#     -var ssh_private_key_file=~/.ssh/packer -var policy=packer/examples/policy.toml \
#     packer/examples/image-pipeline.pkr.hcl
#
# snapscan reads the qcow2 directly (no qemu-nbd, no root needed for the built-in inventory).

variable "base_image" {
  type        = string
  description = "The image to start from: a Debian/Ubuntu disk image with sshd and the build user."
}

variable "accelerator" {
  type        = string
  default     = "kvm"
  description = "kvm where /dev/kvm works, else tcg (software emulation)."
}

variable "ssh_username" {
  type    = string
  default = "packer"
}

variable "ssh_private_key_file" {
  type = string
}

variable "qemuargs" {
  type        = list(list(string))
  default     = []
  description = "Extra QEMU arguments (e.g. -kernel/-initrd/-append for a base image without a boot loader)."
}

variable "output_directory" {
  type    = string
  default = "image-output"
}

variable "scan_directory" {
  type        = string
  default     = "image-scan"
  description = "Where the SBOM and report.json go (outside output_directory: they outlive a failed build)."
}

variable "image_name" {
  type    = string
  default = "golden"
}

variable "snapscan" {
  type        = string
  default     = "snapscan"
  description = "The snapscan command (a path, or a name on PATH)."
}

variable "policy" {
  type        = string
  default     = "packer/examples/policy.toml"
  description = "The policy the image must meet."
}

source "qemu" "golden" {
  disk_image           = true
  iso_url              = var.base_image
  iso_checksum         = "none"
  format               = "qcow2"
  accelerator          = var.accelerator
  headless             = true
  memory               = 1024
  net_device           = "virtio-net"
  disk_interface       = "virtio"
  skip_resize_disk     = true
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "20m"
  shutdown_command     = "sudo systemctl poweroff"
  qemuargs             = var.qemuargs
  output_directory     = var.output_directory
  vm_name              = "${var.image_name}.qcow2"
}

build {
  sources = ["source.qemu.golden"]

  # The image's own work would go here. Then the hygiene a golden image needs: no SSH host keys
  # (every VM from the image would share them) and no shell history.
  provisioner "shell" {
    inline = [
      "echo 'golden image, built by the pipeline' | sudo tee /etc/motd >/dev/null",
      "sudo rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /root/.bash_history",
    ]
  }

  # The gate: scan the artifact; the SBOM and report.json go beside it.
  post-processor "shell-local" {
    inline = [
      "${var.snapscan} scan --policy ${var.policy} --output ${var.scan_directory} ${var.output_directory}/${var.image_name}.qcow2",
    ]
  }
}
