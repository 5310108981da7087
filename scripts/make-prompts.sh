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
  [agent_logged_in]="You are logged in."
  [agent_logged_out]="You are logged out."
  [agent_not_ready]="You are not ready."
  [agent_ready]="You are ready."
  [agent_wrapup_ended]="Wrap up ended. You are ready."
  [agent_refused]="That did not work."
  [supervisor_no_call]="That agent is not on a call."
  [callback_confirm]="Thank you. We will call you back as soon as an agent is free. Goodbye."
  [queue_position]="You are caller number"
  [queue_wait]="Your estimated wait is about"
  [minutes]="minutes"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in "${!TEXT[@]}"; do
  espeak-ng -v en-us -s 150 -w "$tmp/$name.wav" "${TEXT[$name]}"
  sox "$tmp/$name.wav" -r 8000 -c 1 -b 16 "$out/$name.wav" norm -3
done
# The prompt set the `say` prompts use (numbers, digits, dates): one word or phrase each.
say() { # say DIR NAME TEXT
  mkdir -p "$out/$1"
  espeak-ng -v en-us -s 160 -w "$tmp/say.wav" "$3"
  sox "$tmp/say.wav" -r 8000 -c 1 -b 16 "$out/$1/$2.wav" norm -3
}
ones=(zero one two three four five six seven eight nine ten eleven twelve thirteen
  fourteen fifteen sixteen seventeen eighteen nineteen twenty)
for i in $(seq 0 9); do say digits "$i" "${ones[$i]}"; done
say digits star star
say digits hash hash
for i in $(seq 0 20); do say numbers "$i" "${ones[$i]}"; done
tens=([30]=thirty [40]=forty [50]=fifty [60]=sixty [70]=seventy [80]=eighty [90]=ninety)
for t in 30 40 50 60 70 80 90; do say numbers "$t" "${tens[$t]}"; done
say numbers hundred hundred
say numbers thousand thousand
say numbers million million
months=(January February March April May June July August September October November December)
for m in $(seq 1 12); do say months "$m" "${months[$((m - 1))]}"; done
ordinals=(first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth
  thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth
  "twenty first" "twenty second" "twenty third" "twenty fourth" "twenty fifth"
  "twenty sixth" "twenty seventh" "twenty eighth" "twenty ninth" thirtieth "thirty first")
for d in $(seq 1 31); do say ordinals "$d" "${ordinals[$((d - 1))]}"; done

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
