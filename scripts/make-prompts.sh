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
# Music on hold: a gentle arpeggio, 8 s, looped by the player.
mkdir -p prompts/moh
notes=(523.25 659.25 783.99 659.25 587.33 698.46 880.00 698.46)
parts=()
for i in "${!notes[@]}"; do
  sox -n -r 8000 -c 1 -b 16 "$tmp/n$i.wav" synth 1 sine "${notes[$i]}" fade h 0.05 1 0.3 vol 0.3
  parts+=("$tmp/n$i.wav")
done
sox "${parts[@]}" prompts/moh/default.wav
echo "wrote ${#TEXT[@]} prompts to $out and music on hold to prompts/moh/default.wav"
