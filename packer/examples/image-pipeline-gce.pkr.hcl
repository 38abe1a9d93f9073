# The same gate for images built in Google Cloud: Packer's googlecompute builder makes the image,
# and a shell-local post-processor has `snapscan launch` scan it. The launcher creates one
# scanner VM from the snapscan scanner image family with a disk made from the new image attached
# read-only at creation (what `gcloud compute instances create --create-disk=image=IMAGE,mode=ro`
# does; `--attach-at-create`, so the VM needs no service account), and sends the policy with the
# assignment. `--wait` follows the scan through the VM's guest attributes, prints the verdict,
# deletes the VM (its disk goes with it) once the results are acknowledged by the scanner's
# upload sink (where the SBOM and report.json are: the scanner image's settings), and exits 5
# when the image breaks the policy. Then the post-processor deletes the new image (unless
# delete_failed_image = false), so its family falls back to the last image that passed, and
# the build fails.
#
#   packer build -var project_id=my-project -var zone=europe-west1-b \
#     -var policy=packer/examples/policy.toml packer/examples/image-pipeline-gce.pkr.hcl
#
# Needs: the snapscan command and Application Default Credentials allowed the launcher role of
# the README, and a snapscan scanner image family in scanner_image_project.

variable "project_id" {
  type = string
}

variable "zone" {
  type = string
}

variable "source_image_family" {
  type    = string
  default = "debian-12"
}

variable "source_image_project" {
  type    = string
  default = "debian-cloud"
}

variable "image_family" {
  type        = string
  default     = "golden"
  description = "The family of the images the pipeline publishes; each image is <family>-<UTC time>."
}

variable "scanner_image_family" {
  type    = string
  default = "snapscan-scanner"
}

variable "scanner_image_project" {
  type        = string
  default     = ""
  description = "The project of the scanner image family (default: project_id)."
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

variable "delete_failed_image" {
  type        = bool
  default     = true
  description = "Delete an image that breaks the policy or could not be scanned."
}

locals {
  image_name      = "${var.image_family}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  scanner_project = var.scanner_image_project == "" ? var.project_id : var.scanner_image_project
}

source "googlecompute" "golden" {
  project_id              = var.project_id
  zone                    = var.zone
  source_image_family     = var.source_image_family
  source_image_project_id = [var.source_image_project]
  image_name              = local.image_name
  image_family            = var.image_family
  ssh_username            = "packer"
  machine_type            = "e2-standard-2"
}

build {
  sources = ["source.googlecompute.golden"]

  # The image's own work would go here. Then the hygiene a golden image needs: no SSH host keys
  # (every VM from the image would share them) and no shell history.
  provisioner "shell" {
    inline = [
      "echo 'golden image, built by the pipeline' | sudo tee /etc/motd >/dev/null",
      "sudo rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /root/.bash_history",
    ]
  }

  # The gate: a scanner VM scans a read-only disk of the new image against the policy.
  post-processor "shell-local" {
    inline = [
      "code=0",
      "${var.snapscan} launch --project ${var.project_id} --zone ${var.zone} --image-family ${var.scanner_image_family} --image-project ${local.scanner_project} --image projects/${var.project_id}/global/images/${local.image_name} --attach-at-create --policy ${var.policy} --wait || code=$?",
      "if [ $code -ne 0 ] && ${var.delete_failed_image}; then gcloud compute images delete ${local.image_name} --project ${var.project_id} --quiet; fi",
      "exit $code",
    ]
  }
}
