#!/usr/bin/env bash
# Generates the demo flow's prompts (English) as 8 kHz mono 16-bit WAV under prompts/en/.
# Needs espeak-ng and sox (Debian: apt-get install -y espeak-ng sox). The generated files
# are committed; run this again after changing a text.
set -euo pipefail
cd "$(dirname "$0")/.."
out=prompts/en
mkdir -p "$out"
declare -A TEXT=(
  [welcome]="Thank you for calling Switchboard."
  [closed]="We are closed right now."
  [leave_message]="Please leave a message after the tone, then hang up."
  [main_menu]="For billing, press 1. For technical support, press 2. For your account, press 3. To speak to an operator, press 0."
  [no_input]="Sorry, I did not hear a choice."
  [invalid]="Sorry, that is not a valid choice."
  [enter_account]="Please enter your six digit account number, then press hash."
  [invalid_account]="Sorry, that account number is not valid."
  [survey_csat]="Before you go: how satisfied were you with this call? Press 1 to 5, 5 being very satisfied."
  [survey_resolved]="Was your issue resolved? Press 1 for yes, 2 for no."
  [thanks]="Thank you. Goodbye."
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in "${!TEXT[@]}"; do
  espeak-ng -v en-us -s 150 -w "$tmp/$name.wav" "${TEXT[$name]}"
  sox "$tmp/$name.wav" -r 8000 -c 1 -b 16 "$out/$name.wav" norm -3
done
echo "wrote ${#TEXT[@]} prompts to $out"
